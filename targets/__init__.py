"""Hardware targets of tvm_tqs (installed as tvm_tqs.targets): registry, schedules, intrinsics."""

if __name__ != "tvm_tqs.targets":  # the repo root is on sys.path when running from a checkout
    raise ImportError("this package installs as tvm_tqs.targets; import it under that name, not as 'targets'")
