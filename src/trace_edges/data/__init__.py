"""Datasets: download (paper preset), verification, preparation and image loading."""
