// call_timer.cc: per-call time of a tvm_tqs artifact driven by the TVM runtime alone, as a C++ deployment
// calls it (benchmarks/run_overhead.py builds and runs it; tutorials/04_deploy/loader.cc is the full loader).
//
//   call_timer MODEL.so DIM [DIM ...]
//
// Loads the Relax VM executable in MODEL.so, makes one float32 input of shape DIM... (deterministic values,
// made once, as a streaming loop reuses its buffer), warms up, prints "ready", then serves blocks: for each
// line N read from stdin it runs N calls of "main" and prints their per-call time in microseconds of the
// calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID, the clock run_overhead.py uses for the Python side:
// with one thread the runtime runs every kernel in the calling thread, and CPU time leaves out the time
// another process holds the core). Served on request so that the Python side can interleave these blocks
// with its own (ABBA pairs). The result of each call is dropped, as a deployment's loop would.
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <vector>

namespace ffi = tvm::ffi;

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; ++i) n *= static_cast<size_t>(t->shape[i]);
    t->data = std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

static double ThreadSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: call_timer MODEL.so DIM [DIM ...]\n";
    return 2;
  }
  std::vector<int64_t> shape;
  for (int i = 2; i < argc; ++i) shape.push_back(std::atoll(argv[i]));
  try {
    ffi::Module lib = ffi::Module::LoadFromFile(argv[1]);
    ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);  // 2: pooled allocator
    ffi::Function model = vm->GetFunction("main").value();
    ffi::Tensor input =
        ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape.data(), shape.size()),
                                 DLDataType{kDLFloat, 32, 1}, DLDevice{kDLCPU, 0});
    float* x = static_cast<float*>(input.data_ptr());
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    for (int i = 0; i < 20; ++i) model(input);  // warm-up: first-call allocations
    std::printf("ready\n");
    std::fflush(stdout);
    long calls = 0;
    while (std::scanf("%ld", &calls) == 1 && calls > 0) {
      const double start = ThreadSeconds();
      for (long c = 0; c < calls; ++c) model(input);
      std::printf("%.4f\n", (ThreadSeconds() - start) / calls * 1e6);
      std::fflush(stdout);
    }
  } catch (const ffi::Error& e) {
    std::cerr << "TVM error: " << e.what() << "\n";
    return 4;
  }
  return 0;
}
