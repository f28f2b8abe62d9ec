"""The training-free TRACE teacher: self-attention capture, IEP and ABDiv."""
