"""What the tools (``python -m vae_ext train`` and ``bench``) share; the library core never
imports this package (matplotlib lives here)."""
