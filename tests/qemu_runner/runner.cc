// Minimal loader for TVM-exported PrimFunc libraries, cross-compiled for aarch64 and run
// under qemu-aarch64 by tests/qemu_runner/__init__.py.
//
//   runner LIB.so FUNC [--repeat R] ARG... [-- FUNC [--repeat R] ARG...]...
//   runner LIB.so --vm FUNC ARG...     a Relax VM executable (relax.build(...).export_library):
//                                      FUNC(*inputs) on the VM (CPU, pooled allocator); its result
//                                      (a tensor or a tuple of tensors) fills the o: ARGs in order
//   ARG = i:DTYPE:D0xD1x...:PATH   input tensor, raw little-endian bytes read from PATH
//         o:DTYPE:D0xD1x...:PATH   output tensor, written to PATH after the call
//   DTYPE in {int8, uint8, int16, int32, int64, float16, float32, float64}
//
// Several calls ("--"-separated) share one process, so one qemu start serves a batch of kernels.
// With --repeat R > 0 a call is repeated R more times and the mean wall time (us) is printed as
// "time_us=<float>" (meaningless under emulation, kept for real boards).
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

struct Arg {
  bool is_output = false;
  std::string path;
  std::vector<int64_t> shape;
  DLDataType dtype{};
  void* data = nullptr;
  size_t nbytes = 0;
  DLTensor tensor{};
};

DLDataType ParseDType(const std::string& s) {
  if (s == "int8") return DLDataType{kDLInt, 8, 1};
  if (s == "uint8") return DLDataType{kDLUInt, 8, 1};
  if (s == "int16") return DLDataType{kDLInt, 16, 1};
  if (s == "int32") return DLDataType{kDLInt, 32, 1};
  if (s == "int64") return DLDataType{kDLInt, 64, 1};
  if (s == "float16") return DLDataType{kDLFloat, 16, 1};
  if (s == "float32") return DLDataType{kDLFloat, 32, 1};
  if (s == "float64") return DLDataType{kDLFloat, 64, 1};
  std::cerr << "unsupported dtype " << s << "\n";
  std::exit(2);
}

Arg ParseArg(const std::string& spec) {
  // mode:dtype:shape:path (the path may itself contain ':')
  size_t p1 = spec.find(':'), p2 = spec.find(':', p1 + 1), p3 = spec.find(':', p2 + 1);
  if (p1 == std::string::npos || p2 == std::string::npos || p3 == std::string::npos) {
    std::cerr << "bad argument spec " << spec << "\n";
    std::exit(2);
  }
  Arg a;
  std::string mode = spec.substr(0, p1);
  a.is_output = (mode == "o");
  a.dtype = ParseDType(spec.substr(p1 + 1, p2 - p1 - 1));
  std::string shape = spec.substr(p2 + 1, p3 - p2 - 1);
  a.path = spec.substr(p3 + 1);
  size_t start = 0;
  while (start <= shape.size() && !shape.empty()) {
    size_t x = shape.find('x', start);
    a.shape.push_back(std::stoll(shape.substr(start, x == std::string::npos ? x : x - start)));
    if (x == std::string::npos) break;
    start = x + 1;
  }
  size_t n = 1;
  for (int64_t d : a.shape) n *= static_cast<size_t>(d);
  a.nbytes = n * (a.dtype.bits / 8);
  a.data = std::aligned_alloc(64, (a.nbytes + 63) / 64 * 64 + 64);
  std::memset(a.data, 0, a.nbytes);
  if (!a.is_output) {
    std::ifstream f(a.path, std::ios::binary);
    if (!f.read(static_cast<char*>(a.data), static_cast<std::streamsize>(a.nbytes))) {
      std::cerr << "cannot read " << a.nbytes << " bytes from " << a.path << "\n";
      std::exit(2);
    }
  }
  a.tensor.data = a.data;
  a.tensor.device = DLDevice{kDLCPU, 0};
  a.tensor.ndim = static_cast<int32_t>(a.shape.size());
  a.tensor.dtype = a.dtype;
  a.tensor.shape = a.shape.data();
  a.tensor.strides = nullptr;
  a.tensor.byte_offset = 0;
  return a;
}

}  // namespace

int RunCall(const tvm::ffi::Module& mod, const std::string& fname, int repeat, std::vector<Arg>& args) {
  tvm::ffi::Optional<tvm::ffi::Function> f = mod->GetFunction(fname);
  if (!f.has_value()) {
    std::cerr << "function " << fname << " not found\n";
    return 3;
  }
  std::vector<tvm::ffi::AnyView> packed;
  for (Arg& a : args) packed.emplace_back(&a.tensor);
  tvm::ffi::Any rv;
  f.value().CallPacked(packed.data(), static_cast<int32_t>(packed.size()), &rv);
  if (repeat > 0) {
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < repeat; ++r) f.value().CallPacked(packed.data(), static_cast<int32_t>(packed.size()), &rv);
    auto t1 = std::chrono::steady_clock::now();
    std::printf("%s time_us=%.3f\n", fname.c_str(), std::chrono::duration<double, std::micro>(t1 - t0).count() / repeat);
  }
  for (Arg& a : args) {
    if (!a.is_output) continue;
    std::ofstream out(a.path, std::ios::binary);
    out.write(static_cast<const char*>(a.data), static_cast<std::streamsize>(a.nbytes));
  }
  for (Arg& a : args) std::free(a.data);
  return 0;
}

struct CPUAlloc {
  void AllocData(DLTensor* tensor) {
    size_t n = 1;
    for (int i = 0; i < tensor->ndim; ++i) n *= static_cast<size_t>(tensor->shape[i]);
    size_t bytes = n * ((tensor->dtype.bits * tensor->dtype.lanes + 7) / 8);
    tensor->data = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

void CollectTensors(const tvm::ffi::Any& value, std::vector<tvm::ffi::Tensor>* out) {
  if (auto t = value.as<tvm::ffi::Tensor>()) {
    out->push_back(t.value());
    return;
  }
  if (auto arr = value.as<tvm::ffi::Array<tvm::ffi::Any>>()) {
    for (const tvm::ffi::Any& item : arr.value()) CollectTensors(item, out);
    return;
  }
  std::cerr << "VM returned something that is neither a tensor nor a tuple of tensors\n";
  std::exit(5);
}

int RunVM(const tvm::ffi::Module& lib, const std::string& fname, std::vector<Arg>& args) {
  tvm::ffi::Module exec = lib->GetFunction("vm_load_executable").value()().cast<tvm::ffi::Module>();
  exec->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);  // 2: pooled
  std::vector<tvm::ffi::Any> inputs;
  for (Arg& a : args) {
    if (a.is_output) continue;
    tvm::ffi::Tensor t = tvm::ffi::Tensor::FromNDAlloc(
        CPUAlloc(), tvm::ffi::ShapeView(a.shape.data(), a.shape.size()), a.dtype, DLDevice{kDLCPU, 0});
    std::memcpy(t.data_ptr(), a.data, a.nbytes);
    inputs.emplace_back(t);
  }
  std::vector<tvm::ffi::AnyView> packed(inputs.begin(), inputs.end());
  tvm::ffi::Any rv;
  exec->GetFunction(fname).value().CallPacked(packed.data(), static_cast<int32_t>(packed.size()), &rv);
  std::vector<tvm::ffi::Tensor> results;
  CollectTensors(rv, &results);
  size_t k = 0;
  for (Arg& a : args) {
    if (!a.is_output) continue;
    if (k >= results.size()) {
      std::cerr << "VM returned " << results.size() << " tensors, fewer than the outputs asked for\n";
      return 6;
    }
    const DLTensor* t = results[k++].GetDLTensorPtr();
    size_t n = 1;
    for (int i = 0; i < t->ndim; ++i) n *= static_cast<size_t>(t->shape[i]);
    size_t bytes = n * (t->dtype.bits / 8);
    if (bytes != a.nbytes || t->dtype.code != a.dtype.code || t->dtype.bits != a.dtype.bits) {
      std::cerr << "output " << k - 1 << ": VM tensor of " << bytes << " bytes, expected " << a.nbytes << "\n";
      return 6;
    }
    std::ofstream out(a.path, std::ios::binary);
    out.write(static_cast<const char*>(t->data) + t->byte_offset, static_cast<std::streamsize>(bytes));
  }
  for (Arg& a : args) std::free(a.data);
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 4 && std::strcmp(argv[2], "--vm") == 0) {
    try {
      tvm::ffi::Module mod = tvm::ffi::Module::LoadFromFile(argv[1]);
      std::vector<Arg> args;
      for (int i = 4; i < argc; ++i) args.push_back(ParseArg(argv[i]));
      return RunVM(mod, argv[3], args);
    } catch (const tvm::ffi::Error& e) {
      std::cerr << "TVM error: " << e.what() << "\n";
      return 4;
    }
  }
  if (argc < 3) {
    std::cerr << "usage: runner LIB.so FUNC [--repeat R] ARG... [-- FUNC ...]\n";
    return 2;
  }
  try {
    tvm::ffi::Module mod = tvm::ffi::Module::LoadFromFile(argv[1]);
    int i = 2;
    while (i < argc) {
      std::string fname = argv[i++];
      int repeat = 0;
      std::vector<Arg> args;
      for (; i < argc && std::strcmp(argv[i], "--") != 0; ++i) {
        if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
          repeat = std::atoi(argv[++i]);
          continue;
        }
        args.push_back(ParseArg(argv[i]));
      }
      if (i < argc) ++i;  // skip "--"
      int rc = RunCall(mod, fname, repeat, args);
      if (rc != 0) return rc;
    }
  } catch (const tvm::ffi::Error& e) {
    std::cerr << "TVM error: " << e.what() << "\n";
    return 4;
  }
  return 0;
}
