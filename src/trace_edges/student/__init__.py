"""The TRACE student (paper §3.4, Fig. 4b): one-step self-distillation of the teacher's edges.

* :mod:`~trace_edges.student.model` — LoRA (peft) on the teacher's backbone + the edge decoder G;
  one denoiser pass at t = 0 gives Ê ∈ [-1, 1] and the reconstruction Î;
* :mod:`~trace_edges.student.loss` — L = w_rec·‖I − Î‖² + w_edge·Dice(E, (Ê+1)/2), ignore pixels out;
* :mod:`~trace_edges.student.train` — the seeded, bit-exactly resumable training loop;
* :mod:`~trace_edges.student.infer` — load a trained student, edge map of an image;
* :mod:`~trace_edges.student.source` — the ``trace_student`` edge source.

Stages: :mod:`trace_edges.stages.student` (``run_distill``, ``run_infer``). docs/student.md.
Importing this package is cheap (no torch); import the submodules for the work.
"""
