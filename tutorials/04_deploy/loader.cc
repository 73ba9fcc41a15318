// loader.cc: run a tvm_tqs artifact on the device with nothing but the TVM runtime (tutorial 4).
//
//   loader MODEL.so WINDOW.bin BATCH LOOKBACK CHANNELS HORIZON CALLS OUT.bin
//
// WINDOW.bin holds the float32 window [BATCH, LOOKBACK, CHANNELS] (raw, little-endian; numpy's
// `window.astype("float32").tofile(path)`). The model is called CALLS times; after each call its forecast
// [BATCH, HORIZON, CHANNELS] is fed back: the window drops its oldest HORIZON steps and appends the
// forecast (a contract with layout BLC, every channel a target, stride == horizon, no auxiliary inputs,
// like the shipped example; see docs/rollout.md for the others). OUT.bin receives the whole rollout
// [BATCH, CALLS * HORIZON, CHANNELS].
//
// Build (headers and libraries ship in the apache-tvm and apache-tvm-ffi wheels):
//   g++ -std=c++17 -O2 -I $TVM_FFI/include loader.cc -o loader
//       -L $TVM/lib -L $TVM_FFI/lib -ltvm_runtime -ltvm_ffi -Wl,-rpath,$TVM/lib:$TVM_FFI/lib
// (one command; $TVM and $TVM_FFI are the installed tvm and tvm_ffi package directories.)
// On an aarch64 board, the same with the aarch64 wheels' libraries (or cross-compile with
// aarch64-linux-gnu-g++ and copy the two .so files next to the binary).
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

// Host memory for the input tensor the VM reads.
struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; ++i) n *= static_cast<size_t>(t->shape[i]);
    t->data = std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

// The model's first output: a tensor, or the first tensor of a tuple.
ffi::Tensor FirstTensor(const ffi::Any& value) {
  if (auto t = value.as<ffi::Tensor>()) return t.value();
  if (auto tuple = value.as<ffi::Array<ffi::Any>>()) return FirstTensor(tuple.value()[0]);
  throw std::runtime_error("the model returned neither a tensor nor a tuple of tensors");
}

int main(int argc, char** argv) {
  if (argc != 9) {
    std::cerr << "usage: loader MODEL.so WINDOW.bin BATCH LOOKBACK CHANNELS HORIZON CALLS OUT.bin\n";
    return 2;
  }
  const int64_t B = std::atoll(argv[3]), L = std::atoll(argv[4]), C = std::atoll(argv[5]);
  const int64_t H = std::atoll(argv[6]), calls = std::atoll(argv[7]);
  if (H > L) {
    std::cerr << "this loader feeds back whole forecasts: HORIZON must not exceed LOOKBACK\n";
    return 2;
  }
  std::vector<float> window(B * L * C), rollout(B * calls * H * C);
  std::ifstream in(argv[2], std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(window.data()), window.size() * sizeof(float))) {
    std::cerr << "cannot read " << window.size() * sizeof(float) << " bytes from " << argv[2] << "\n";
    return 2;
  }
  try {
    // 1. The artifact holds a Relax VM executable: load it, start the VM on the CPU.
    ffi::Module lib = ffi::Module::LoadFromFile(argv[1]);
    ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);  // 2: pooled allocator
    ffi::Function model = vm->GetFunction("main").value();

    int64_t shape[3] = {B, L, C};
    ffi::Tensor input = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(shape, 3),
                                                 DLDataType{kDLFloat, 32, 1}, DLDevice{kDLCPU, 0});
    for (int64_t call = 0; call < calls; ++call) {
      // 2. One model call on the current window.
      std::memcpy(input.data_ptr(), window.data(), window.size() * sizeof(float));
      ffi::Tensor out = FirstTensor(model(input));
      const DLTensor* y = out.GetDLTensorPtr();
      if (y->ndim != 3 || y->shape[0] != B || y->shape[1] != H || y->shape[2] != C) {
        std::cerr << "the forecast is not [" << B << ", " << H << ", " << C << "]\n";
        return 3;
      }
      const float* f = reinterpret_cast<const float*>(static_cast<const char*>(y->data) + y->byte_offset);
      // 3. Keep the forecast, and feed it back: shift the window by H steps, append the forecast.
      for (int64_t b = 0; b < B; ++b) {
        std::memcpy(&rollout[(b * calls * H + call * H) * C], &f[b * H * C], H * C * sizeof(float));
        float* w = &window[b * L * C];
        std::memmove(w, w + H * C, (L - H) * C * sizeof(float));
        std::memcpy(w + (L - H) * C, &f[b * H * C], H * C * sizeof(float));
      }
    }
  } catch (const ffi::Error& e) {
    std::cerr << "TVM error: " << e.what() << "\n";
    return 4;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 4;
  }
  std::ofstream(argv[8], std::ios::binary)
      .write(reinterpret_cast<const char*>(rollout.data()), rollout.size() * sizeof(float));
  std::printf("loader: %lld calls of %s, rollout [%lld, %lld, %lld] -> %s; first values %.5f %.5f %.5f\n",
              static_cast<long long>(calls), argv[1], static_cast<long long>(B),
              static_cast<long long>(calls * H), static_cast<long long>(C), argv[8], rollout[0], rollout[1],
              rollout[2]);
  return 0;
}
