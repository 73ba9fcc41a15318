"""Tensor intrinsics TVM 0.27 lacks or ships broken (x86 VNNI for LLVM 22, aarch64 sdot/i8mm).

Importing a submodule registers its intrinsics (``tqs_*`` names) with ``tvm.s_tir.TensorIntrin``:

* :mod:`.x86`: ``VNNI_INT8``, ``VNNI_INT4`` (vpdpbusd zmm), ``AVX2_INT8``, ``AVX2_INT4`` (exact sign trick).
* :mod:`.arm`: ``SDOT_INT8``, ``SDOT_INT4`` (+dotprod), ``SMMLA_INT8``, ``SMMLA_INT4`` (+i8mm),
  ``NEON_INT8``, ``NEON_INT4`` (smull/smlal2/sadalp, plain NEON).
* :mod:`.gpu`: ``DP4A_INT8``, ``DP4A_INT4`` (CUDA ``__dp4a`` on global operands).

All int4 variants decode offset-binary nibbles in registers (see :mod:`.common`).
"""
