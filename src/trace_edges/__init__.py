"""trace-edges: a reproduction of TRACE (ICLR 2026), diffusion self-attention as an instance edge detector."""

__version__ = "0.1.0"
