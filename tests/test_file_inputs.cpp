// Your own tensors: the .npy reader, SHA-256 digests, data=file descriptor fields, and cases run
// on supplied files (include/normcheck/file_inputs.hpp, docs/descriptor.md).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "normcheck/backend.hpp"
#include "normcheck/file_inputs.hpp"
#include "normcheck/npy.hpp"
#include "normcheck/runner.hpp"
#include "shell.hpp"

namespace {

using namespace normcheck;
namespace fs = std::filesystem;

/// A .npy file built by hand (numpy.lib.format 1.0): header text padded to 64 bytes, then data.
std::vector<unsigned char> npy_bytes(const std::string& dict, const std::vector<unsigned char>& data,
                                     int major = 1) {
  std::string header = dict;
  const size_t pre = major == 1 ? 10 : 12;
  header.append((64 - (pre + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::vector<unsigned char> out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(major), 0};
  const size_t n = header.size();
  out.push_back(static_cast<unsigned char>(n & 0xff));
  out.push_back(static_cast<unsigned char>(n >> 8));
  if (major != 1) {
    out.push_back(0);
    out.push_back(0);
  }
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

template <class T>
std::vector<unsigned char> le_bytes(const std::vector<T>& v) {
  std::vector<unsigned char> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::string f4(const std::string& shape, bool fortran = false) {
  return "{'descr': '<f4', 'fortran_order': " + std::string(fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
}

NpyArray parse(const std::vector<unsigned char>& b) { return parse_npy(b.data(), b.size()); }

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("normcheck_test_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string write(const fs::path& p, const std::vector<unsigned char>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  return p.string();
}

TEST(Npy, ReadsCOrderFloat32) {
  const auto a = parse(npy_bytes(f4("(2, 3)"), le_bytes<float>({1, 2, 3, 4, 5, 6})));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.descr(), "<f4");
  EXPECT_EQ(a.numel(), 6);
  EXPECT_EQ(a.file_position(4), 4);
}

TEST(Npy, FortranOrderMapsLogicalIndexToColumnMajorPosition) {
  // logical [[1,2,3],[4,5,6]] stored column by column: 1 4 2 5 3 6.
  const auto a = parse(npy_bytes(f4("(2, 3)", true), le_bytes<float>({1, 4, 2, 5, 3, 6})));
  EXPECT_TRUE(a.fortran_order);
  // logical (0,1) = 2 is at position 2; (1,0) = 4 at position 1; (1,2) = 6 at position 5.
  EXPECT_EQ(a.file_position(1), 2);
  EXPECT_EQ(a.file_position(3), 1);
  EXPECT_EQ(a.file_position(5), 5);
}

TEST(Npy, BigEndianElementsAreSwapped) {
  const auto a = parse(npy_bytes("{'descr': '>u2', 'fortran_order': False, 'shape': (1,), }", {0x12, 0x34}));
  EXPECT_EQ(a.raw(0), 0x1234u);
}

TEST(Npy, Version2HeaderAndDoubleQuotesAndZeroDims) {
  const auto a = parse(npy_bytes("{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": ()}", le_bytes<double>({2.5}), 2));
  EXPECT_TRUE(a.shape.empty());
  EXPECT_EQ(a.numel(), 1);
}

TEST(Npy, MalformedFilesAreOneLineErrors) {
  const auto data = le_bytes<float>({1, 2});
  const std::vector<std::pair<std::vector<unsigned char>, std::string>> bad = {
      {{'x', 'y'}, "magic"},
      {npy_bytes(f4("(3,)"), data), "data holds 8 bytes"},
      {npy_bytes(f4("(1,)"), data), "data holds 8 bytes"},
      {npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", data), "quoted string"},
      {npy_bytes("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", data), "only float"},
      {npy_bytes("{'descr': '<f4', 'shape': (2,), }", data), "needs the keys"},
      {npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", data), "repeated"},
      {npy_bytes(f4("(-2,)"), data), "non-negative"},
      {npy_bytes(f4("(99999999999999999999,)"), data), "overflows 64 bits"},
      {npy_bytes(f4("(4294967296, 4294967296)"), data), "overflows"},
      {npy_bytes(f4("(2,"), data), "shape extents must be non-negative integers"},
      {npy_bytes(f4("(2,)") + " junk", data), "after the header"},
  };
  for (const auto& [bytes, what] : bad) {
    try {
      parse(bytes);
      ADD_FAILURE() << "accepted, expected: " << what;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(what), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  // A header length past the end of the file.
  auto b = npy_bytes(f4("(2,)"), data);
  b[8] = 0xff;
  b[9] = 0x7f;
  EXPECT_THROW(parse(b), Error);
}

TEST(Sha256, MatchesFips180Examples) {
  // FIPS 180-2 appendix B.1 ("abc") and the empty message.
  const std::string abc = "abc";
  EXPECT_EQ(sha256_hex(reinterpret_cast<const unsigned char*>(abc.data()), abc.size()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(nullptr, 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

const std::string kH1(64, 'a'), kH2(64, 'b');

TEST(FileDescriptor, FileFieldsRoundTripThroughParseAndPrint) {
  const std::string d = "batch_norm,pass=forward_training,dtype=f32,shape=2x3,steps=2,data=file:" + kH1 + ":" + kH2 +
                        ",gamma=file:" + kH1 + ",running_mean=file:" + kH2;
  const Problem p = parse_descriptor(d);
  EXPECT_EQ(p.files.x, (std::vector<std::string>{kH1, kH2}));
  EXPECT_EQ(p.files.gamma, kH1);
  EXPECT_EQ(p.files.running_mean, kH2);
  EXPECT_EQ(to_descriptor(p), d);
  EXPECT_EQ(to_descriptor(parse_descriptor(to_descriptor(p))), d);
  const std::string b = "layer_norm,pass=backward_training,dtype=bf16,shape=2x4,dy=file:" + kH1 + ",beta=file:" + kH2;
  EXPECT_EQ(to_descriptor(parse_descriptor(b)), b);
}

TEST(FileDescriptor, BadFileFieldsAreRejected) {
  for (const std::string& d : std::vector<std::string>{
           "layer_norm,shape=2x4,data=file:abc",                                   // not 64 hex digits
           "layer_norm,shape=2x4,data=file:" + std::string(64, 'A'),               // upper case
           "layer_norm,shape=2x4,data=file:" + kH1 + ":" + kH2,                    // 2 x files, 1 call
           "layer_norm,shape=2x4,special=nan,data=file:" + kH1,                    // special on file data
           "layer_norm,shape=2x4,dy=file:" + kH1,                                  // dy on a forward pass
           "layer_norm,shape=2x4,affine=0,gamma=file:" + kH1,                      // gamma without affine
           "rms_norm,shape=2x4,beta=file:" + kH1,                                  // rms_norm has no beta
           "layer_norm,shape=2x4,running_mean=file:" + kH1,                        // not batch_norm
           "layer_norm,shape=2x4,gamma=normal",                                    // gamma only as a file
       })
    EXPECT_THROW(parse_descriptor(d), Error) << d;
}

/// The example of issue 14: x = [40000, 40001, 40002, 40003] as a 1×4 LayerNorm, exactly.
TEST(FileInputs, LargeOffsetRowIsExpressibleExactlyAndPasses) {
  const auto dir = temp_dir("file_inputs_40000");
  const std::string x = write(dir / "x.npy", npy_bytes(f4("(1, 4)"), le_bytes<float>({40000, 40001, 40002, 40003})));
  const std::string g = write(dir / "g.npy", npy_bytes(f4("(4,)"), le_bytes<float>({1, 1, 1, 1})));
  const std::string b = write(dir / "b.npy", npy_bytes(f4("(4,)"), le_bytes<float>({0, 0, 0, 0})));
  SuppliedInputs in;
  add_input(in, "x=" + x);
  add_input(in, "gamma=" + g);
  add_input(in, "beta=" + b);
  Problem p = parse_descriptor("layer_norm,shape=1x4");
  bind_inputs(p, in);
  ASSERT_EQ(p.files.x.size(), 1u);
  EXPECT_EQ(p.files.x[0], load_supplied(x).sha256);
  const std::string desc = to_descriptor(p);
  EXPECT_NE(desc.find(",data=file:" + p.files.x[0]), std::string::npos) << desc;

  BackendRegistry reg;
  register_builtin_backends(reg);
  auto naive = reg.create("naive");
  CaseCapture cap;
  RunOptions opt;
  opt.inputs = &in;
  opt.capture = &cap;
  const CaseResult r = run_case(*naive, parse_descriptor(desc), opt);
  EXPECT_EQ(r.verdict, Verdict::pass) << r.reason;
  EXPECT_EQ(cap.inputs.batches.at(0), (std::vector<double>{40000, 40001, 40002, 40003}));
  // By hand: mean 40001.5, biased variance (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25,
  // y = (x − mean)/sqrt(1.25 + eps), eps = 1e-5 rounded to f32.
  const double eps = static_cast<float>(1e-5);
  const double s = std::sqrt(1.25 + eps);
  const std::vector<double> want = {-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s};
  ASSERT_EQ(cap.reference.y.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(cap.reference.y[i], want[i], 1e-15) << i;
  EXPECT_EQ(r.input_options, " --input x=" + x + " --input beta=" + b + " --input gamma=" + g);
}

TEST(FileInputs, DifferentFileThanTheDescriptorNamesIsRefused) {
  const auto dir = temp_dir("file_inputs_mismatch");
  const std::string x1 = write(dir / "x1.npy", npy_bytes(f4("(1, 4)"), le_bytes<float>({1, 2, 3, 4})));
  const std::string x2 = write(dir / "x2.npy", npy_bytes(f4("(1, 4)"), le_bytes<float>({1, 2, 3, 5})));
  SuppliedInputs a, b;
  add_input(a, "x=" + x1);
  add_input(b, "x=" + x2);
  Problem p = parse_descriptor("layer_norm,shape=1x4");
  bind_inputs(p, a);
  Problem q = p;
  try {
    bind_inputs(q, b);
    ADD_FAILURE() << "accepted a different file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not the data the descriptor was made with"), std::string::npos) << e.what();
  }
  // run_case refuses as well, and refuses a file-named descriptor without its files.
  BackendRegistry reg;
  register_builtin_backends(reg);
  auto naive = reg.create("naive");
  RunOptions opt;
  opt.inputs = &b;
  EXPECT_THROW(run_case(*naive, p, opt), Error);
  EXPECT_THROW(run_case(*naive, p, RunOptions{}), Error);
}

TEST(FileInputs, ShapeAndDtypeMustMatchTheDescriptor) {
  const auto dir = temp_dir("file_inputs_shape");
  const std::string x = write(dir / "x.npy", npy_bytes(f4("(2, 2)"), le_bytes<float>({1, 2, 3, 4})));
  const std::string d = write(dir / "d.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 4), }",
                                                       le_bytes<double>({1, 2, 3, 4})));
  SuppliedInputs a, b;
  add_input(a, "x=" + x);
  add_input(b, "x=" + d);
  Problem p = parse_descriptor("layer_norm,shape=1x4");
  try {
    bind_inputs(p, a);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shape 2x2 does not match the descriptor's x shape 1x4"), std::string::npos)
        << e.what();
  }
  try {
    bind_inputs(p, b);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dtype '<f8' does not match"), std::string::npos) << e.what();
  }
  SuppliedInputs c;
  EXPECT_THROW(add_input(c, "weights=" + x), Error);
  EXPECT_THROW(add_input(c, "x"), Error);
}

TEST(FileInputs, SixteenBitPatternsFortranOrderAndPerStepBatches) {
  const auto dir = temp_dir("file_inputs_bits");
  // bf16 bits: 0x3f80 = 1, 0x4000 = 2, 0xc040 = −3, 0x3f00 = 0.5 (upper halves of binary32).
  const std::string xb = write(dir / "xb.npy", npy_bytes("{'descr': '<u2', 'fortran_order': False, 'shape': (2, 2), }",
                                                         le_bytes<uint16_t>({0x3f80, 0x4000, 0xc040, 0x3f00})));
  // f16 as '<f2' in Fortran order: logical [[1, 2], [-3, 0.5]] stored by columns 1, −3, 2, 0.5.
  // binary16: 1 = 0x3c00, −3 = 0xc200, 2 = 0x4000, 0.5 = 0x3800.
  const std::string xh = write(dir / "xh.npy", npy_bytes("{'descr': '<f2', 'fortran_order': True, 'shape': (2, 2), }",
                                                         le_bytes<uint16_t>({0x3c00, 0xc200, 0x4000, 0x3800})));
  BackendRegistry reg;
  register_builtin_backends(reg);
  auto naive = reg.create("naive");
  for (const auto& [desc, file] : {std::pair{"layer_norm,dtype=bf16,shape=2x2", xb}, {"layer_norm,dtype=f16,shape=2x2", xh}}) {
    SuppliedInputs in;
    add_input(in, "x=" + file);
    Problem p = parse_descriptor(desc);
    bind_inputs(p, in);
    CaseCapture cap;
    RunOptions opt;
    opt.inputs = &in;
    opt.capture = &cap;
    run_case(*naive, p, opt);
    EXPECT_EQ(cap.inputs.batches.at(0), (std::vector<double>{1, 2, -3, 0.5})) << desc;
  }
  // f16 '<f2' is not accepted for bf16 (NumPy's float16 is binary16, not bfloat16).
  SuppliedInputs wrong;
  add_input(wrong, "x=" + xh);
  Problem q = parse_descriptor("layer_norm,dtype=bf16,shape=2x2");
  EXPECT_THROW(bind_inputs(q, wrong), Error);

  // batch_norm with 2 training steps: one x per call, x0 and x1.
  const std::string s0 = write(dir / "s0.npy", npy_bytes(f4("(2, 1)"), le_bytes<float>({1, 3})));
  const std::string s1 = write(dir / "s1.npy", npy_bytes(f4("(2, 1)"), le_bytes<float>({5, 9})));
  SuppliedInputs steps;
  add_input(steps, "x1=" + s1);
  add_input(steps, "x0=" + s0);
  Problem b = parse_descriptor("batch_norm,shape=2x1,steps=2");
  bind_inputs(b, steps);
  CaseCapture cap;
  RunOptions opt;
  opt.inputs = &steps;
  opt.capture = &cap;
  const CaseResult r = run_case(*naive, b, opt);
  EXPECT_EQ(r.verdict, Verdict::pass) << r.reason;
  EXPECT_EQ(cap.inputs.batches.at(0), (std::vector<double>{1, 3}));
  EXPECT_EQ(cap.inputs.batches.at(1), (std::vector<double>{5, 9}));
  // running_mean after two steps, PyTorch momentum m = 0.1 (rounded to f32):
  // (1 − m)·(m·2) + m·7 = 0.88 for m = 0.1.
  const double m = static_cast<float>(0.1);
  EXPECT_NEAR(cap.reference.running_mean.at(0), (1 - m) * (m * 2) + m * 7, 1e-12);
  SuppliedInputs one;
  add_input(one, "x=" + s0);
  Problem b1 = parse_descriptor("batch_norm,shape=2x1,steps=2");
  EXPECT_THROW(bind_inputs(b1, one), Error);  // 2 calls need 2 x files
}

TEST(FileInputs, CliRunsReproducesAndRefusesAnotherFile) {
  using normcheck::testing::sh;
  const std::string bin = NORMCHECK_BIN;
  const auto dir = temp_dir("file_inputs_cli");
  const std::string x = write(dir / "x.npy", npy_bytes(f4("(1, 4)"), le_bytes<float>({40000, 40001, 40002, 40003})));
  const std::string y = write(dir / "y.npy", npy_bytes(f4("(1, 4)"), le_bytes<float>({40000, 40001, 40002, 40004})));
  const auto ok = sh(bin + " --backend naive --case layer_norm,shape=1x4 --input x=" + x + " --json " + (dir / "r.json").string());
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  const std::string h = load_supplied(x).sha256;
  std::ifstream jf(dir / "r.json");
  const std::string json((std::istreambuf_iterator<char>(jf)), std::istreambuf_iterator<char>());
  EXPECT_NE(json.find("shape=1x4,data=file:" + h), std::string::npos) << json;
  EXPECT_NE(json.find("data=file:" + h + " --input x=" + x), std::string::npos) << json;  // the reproducer
  // A merged report keeps the reproducer's --input.
  const auto merged = sh(bin + " merge " + (dir / "r.json").string() + " -o " + (dir / "m.json").string());
  EXPECT_EQ(merged.exit_code, 0) << merged.output;
  std::ifstream mf(dir / "m.json");
  const std::string mjson((std::istreambuf_iterator<char>(mf)), std::istreambuf_iterator<char>());
  EXPECT_NE(mjson.find("data=file:" + h + " --input x=" + x), std::string::npos) << mjson;
  const std::string named = "layer_norm,pass=forward_training,dtype=f32,shape=1x4,data=file:" + h;
  EXPECT_EQ(sh(bin + " --backend naive --case " + named + " --input x=" + x).exit_code, 0);
  const auto other = sh(bin + " --backend naive --case " + named + " --input x=" + y);
  EXPECT_EQ(other.exit_code, 2) << other.output;
  EXPECT_NE(other.output.find("not the data the descriptor was made with"), std::string::npos) << other.output;
  const auto none = sh(bin + " --backend naive --case " + named);
  EXPECT_EQ(none.exit_code, 2) << none.output;
  const auto shape = sh(bin + " --backend naive --case layer_norm,shape=2x2 --input x=" + x);
  EXPECT_EQ(shape.exit_code, 2) << shape.output;
  EXPECT_NE(shape.output.find("normcheck: error: --input x="), std::string::npos) << shape.output;
  const auto missing = sh(bin + " --backend naive --case layer_norm,shape=1x4 --input x=" + (dir / "no.npy").string());
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
}

}  // namespace
