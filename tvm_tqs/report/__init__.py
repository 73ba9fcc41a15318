"""Human-readable renderings of tvm_tqs results (text tables now; HTML and plots later)."""
