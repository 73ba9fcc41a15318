"""Relax passes of tvm_tqs (installed as tvm_tqs.passes): one pass per file."""

if __name__ != "tvm_tqs.passes":  # the repo root is on sys.path when running from a checkout
    raise ImportError("this package installs as tvm_tqs.passes; import it under that name, not as 'passes'")
