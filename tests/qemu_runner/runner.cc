// Minimal loader for TVM-exported PrimFunc libraries, cross-compiled for aarch64 and run
// under qemu-aarch64 by tests/qemu_runner/__init__.py.
//
//   runner LIB.so FUNC [--repeat R] ARG... [-- FUNC [--repeat R] ARG...]...
//   ARG = i:DTYPE:D0xD1x...:PATH   input tensor, raw little-endian bytes read from PATH
//         o:DTYPE:D0xD1x...:PATH   output tensor, written to PATH after the call
//   DTYPE in {int8, uint8, int16, int32, int64, float32, float64}
//
// Several calls ("--"-separated) share one process, so one qemu start serves a batch of kernels.
// With --repeat R > 0 a call is repeated R more times and the mean wall time (us) is printed as
// "time_us=<float>" (meaningless under emulation, kept for real boards).
#include <tvm/ffi/any.h>
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

int main(int argc, char** argv) {
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
