// Plugins through the C ABI: the example passes like the same code called in process, and each
// misbehaving plugin gets its documented outcome without taking normcheck down.
#include <gtest/gtest.h>

#include "shell.hpp"
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "normcheck/data.hpp"
#include "normcheck/runner.hpp"
#include "plugin/plugin_backend.hpp"
#include "plugin/worker.hpp"

namespace normcheck {
namespace {

using normcheck::testing::sh;

const std::string kBin = NORMCHECK_BIN;
const std::string kExample = NORMCHECK_EXAMPLE_PLUGIN;
std::string plugin(const std::string& name) { return std::string(NORMCHECK_TEST_PLUGIN_DIR) + "/libplugin_" + name + ".so"; }

TEST(Plugins, ExampleGivesTheSameResultsIsolatedAndInProcess) {
  auto isolated = load_plugin(kExample, 60, true);
  auto in_process = load_plugin(kExample, 60, false);
  int compared = 0;
  for (const char* suite : {"smoke", "edge"}) {
    for (const auto& c : load_suite(suite).cases) {
      const Problem p = parse_descriptor(c.descriptor);
      const CaseResult a = run_case(*isolated, p, {}), b = run_case(*in_process, p, {});
      SCOPED_TRACE(c.descriptor);
      EXPECT_EQ(a.verdict, b.verdict);
      EXPECT_NE(a.verdict, Verdict::fail) << a.reason;
      EXPECT_NE(a.verdict, Verdict::error) << a.reason;
      ASSERT_EQ(a.tensors.size(), b.tensors.size());
      for (size_t i = 0; i < a.tensors.size(); ++i) {  // bit-identical outputs
        EXPECT_EQ(a.tensors[i].max_abs_err, b.tensors[i].max_abs_err) << a.tensors[i].name;
        EXPECT_EQ(a.tensors[i].worst.got, b.tensors[i].worst.got) << a.tensors[i].name;
      }
      compared += a.verdict == Verdict::pass;
    }
  }
  EXPECT_GE(compared, 40);
}

TEST(Plugins, ExampleGatesLikeABuiltInBackendThroughTheCli) {
  // Per process: two test runs (two build trees) may share /tmp.
  const auto json_path =
      (std::filesystem::temp_directory_path() / ("nc_example_plugin_" + std::to_string(getpid()) + ".json")).string();
  const auto o = sh(kBin + " --backend " + kExample + " --suite edge -q --json " + json_path);
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_NE(o.output.find("0 failed, 0 errors"), std::string::npos) << o.output;
  // What the plugin declares about itself is recorded in the report.
  const auto j = nlohmann::json::parse(std::ifstream(json_path));
  EXPECT_EQ(j["backend"]["id"], "normcheck_example");
  bool declared = false;
  for (const auto& n : j["backend"]["notes"])
    declared |= n.get<std::string>().find("accumulation f64, summation recursive") != std::string::npos;
  EXPECT_TRUE(declared) << j["backend"]["notes"].dump();
  std::filesystem::remove(json_path);
}

struct Planted {
  const char* plugin;
  const char* verdict;
  const char* detail;
  const char* absent = nullptr;  ///< text the output must not hold (e.g. the wrong tensor's name)
};

class MisbehavingPlugin : public ::testing::TestWithParam<Planted> {};

TEST_P(MisbehavingPlugin, IsReportedAndTheRunGoesOn) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("nc_plugin_" + std::string(GetParam().plugin) + "_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const auto json = (dir / "r.json").string();
  const auto o = sh(kBin + " --backend " + plugin(GetParam().plugin) +
                    " --timeout 1 --case batch_norm,shape=2x3x4 --case layer_norm,shape=3x5 --json " + json);
  EXPECT_EQ(o.exit_code, 1) << o.output;
  EXPECT_NE(o.output.find(GetParam().detail), std::string::npos) << o.output;
  if (GetParam().absent) {
    EXPECT_EQ(o.output.find(GetParam().absent), std::string::npos) << o.output;
  }
  const auto j = nlohmann::json::parse(std::ifstream(json));
  EXPECT_TRUE(j["complete"].get<bool>());
  ASSERT_EQ(j["cases"].size(), 2u);  // both cases ran: the first failure did not end the run
  for (const auto& c : j["cases"]) EXPECT_EQ(c["verdict"], GetParam().verdict);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Faults, MisbehavingPlugin,
    ::testing::Values(Planted{"segv", "CRASH", "SIGSEGV"}, Planted{"abort", "CRASH", "SIGABRT"},
                      Planted{"hang", "TIMEOUT", "longer than 1 s"},
                      Planted{"overrun", "OVERRUN", "outside tensor y"},
                      // 128 bytes past y reach what follows it (gamma in these passes): y is named.
                      Planted{"overrun_128", "OVERRUN", "outside tensor y (past the end", "gamma"},
                      Planted{"exit", "CRASH", "the plugin exited with status 0"},
                      Planted{"error", "ERROR", "planted error: out of workspace"}),
    [](const auto& tp) { return std::string(tp.param.plugin); });

TEST(Plugins, LoadFailuresAreUsageErrorsWithOneLine) {
  struct Bad {
    std::string spec, message;
  };
  for (const Bad& b : {Bad{plugin("bad_abi"), "built for plugin ABI 99."},
                       Bad{plugin("no_entry"), "does not export normcheck_plugin_entry"},
                       Bad{plugin("ctor_segv"), "died of SIGSEGV (Segmentation fault) while loading"},
                       Bad{plugin("ctor_exit"), "exited with status 0 while loading"},
                       Bad{plugin("init_fail"), "its init hook failed: planted: no licence server"},
                       Bad{"/nonexistent/libx.so", "no such file"},
                       Bad{std::string(NORMCHECK_BIN), "cannot load"}}) {
    // The library is loaded in a worker first, --in-process (and bench) too: never in normcheck.
    for (const char* mode : {"", " --in-process"}) {
      const auto o = sh(kBin + " --backend " + b.spec + mode + " --suite smoke");
      EXPECT_EQ(o.exit_code, 2) << b.spec << mode << ": " << o.output;
      EXPECT_NE(o.output.find(b.message), std::string::npos) << o.output;
      EXPECT_EQ(std::count(o.output.begin(), o.output.end(), '\n'), 1) << o.output;
    }
  }
}

TEST(Plugins, FoundByNameOnNormcheckPluginPath) {
  const auto o = sh("NORMCHECK_PLUGIN_PATH=/nonexistent:" + std::filesystem::path(kExample).parent_path().string() +
                    " " + kBin + " --backend normcheck_example_plugin --case layer_norm,shape=3x5 -q");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_EQ(sh(kBin + " --backend normcheck_example_plugin --case layer_norm,shape=3x5").exit_code, 2);
}

}  // namespace
}  // namespace normcheck

namespace normcheck {
namespace {

// What a plugin declares reaches normcheck: its precision profile sets the budget's depth and
// accumulator, and --convention native takes its running-statistics convention.
TEST(PluginDeclarations, ProfileAndConventionAreUsed) {
  auto b = load_plugin(plugin("declarations"), 5, true);
  ASSERT_TRUE(b);
  const Capabilities c = b->capabilities();
  EXPECT_EQ(c.convention, "keras");
  EXPECT_EQ(c.precision.summation, Summation::pairwise);
  ASSERT_TRUE(c.precision.accumulation.has_value());
  EXPECT_EQ(*c.precision.accumulation, DType::f16);
  const std::string json = ::testing::TempDir() + "/declarations_" + std::to_string(getpid()) + ".json";
  const auto o = sh(std::string(NORMCHECK_BIN) + " --backend " + plugin("declarations") +
                    " --convention native --case batch_norm,shape=4x3 --json " + json);
  EXPECT_EQ(o.exit_code, 1) << o.output;  // it computes nothing: the outputs are missing
  std::ifstream f(json);
  const auto j = nlohmann::json::parse(f);
  EXPECT_EQ(j["cases"][0]["descriptor"], "batch_norm,pass=forward_training,dtype=f32,shape=4x3,convention=keras")
      << "--convention native takes the plugin's keras, with Keras's default momentum";
}

}  // namespace
}  // namespace normcheck

namespace normcheck {
namespace {

std::string temp_path(const std::string& stem) {
  return (std::filesystem::temp_directory_path() / (stem + "_" + std::to_string(getpid()))).string();
}

// A plugin that writes to an input it must only read is a FAIL naming that input, whether the
// call ran in the worker (compared against normcheck's copy) or in process (hashed).
struct Modified {
  const char* plugin;
  const char* tensor;
  const char* descriptor;
};
class InputModifyingPlugin : public ::testing::TestWithParam<Modified> {};

TEST_P(InputModifyingPlugin, FailsNamingTheInput) {
  for (const char* mode : {"", " --in-process"}) {
    const auto json = temp_path(std::string("nc_modify_") + GetParam().plugin) + ".json";
    const auto o = sh(kBin + " --backend " + plugin(GetParam().plugin) + mode + " --case " + GetParam().descriptor +
                      " --json " + json);
    SCOPED_TRACE(mode);
    EXPECT_EQ(o.exit_code, 1) << o.output;
    EXPECT_NE(o.output.find(std::string("input modified: the plugin wrote to ") + GetParam().tensor + ","),
              std::string::npos)
        << o.output;
    const auto j = nlohmann::json::parse(std::ifstream(json));
    ASSERT_EQ(j["cases"].size(), 1u);
    EXPECT_EQ(j["cases"][0]["verdict"], "FAIL");
    std::filesystem::remove(json);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, InputModifyingPlugin,
    ::testing::Values(Modified{"modify_x", "x", "layer_norm,shape=3x5"},
                      Modified{"modify_gamma", "gamma", "batch_norm,shape=2x3x4"},
                      Modified{"modify_beta", "beta", "batch_norm,shape=2x3x4,pass=forward_inference"},
                      Modified{"modify_dy", "dy", "batch_norm,shape=2x3x4,pass=backward_training"}),
    [](const auto& tp) { return std::string(tp.param.tensor); });

TEST(PluginIsolation, AGrandchildIsEndedWithTheWorkersProcessGroup) {
  // The grandchild sleeps 30 s holding normcheck's stdout: `normcheck | cat` must not wait for it.
  const std::string pidfile = temp_path("nc_fork_pid");
  const auto t0 = std::chrono::steady_clock::now();
  const auto o = sh("NC_TEST_PIDFILE=" + pidfile + " " + kBin + " --backend " + plugin("fork") +
                    " --case layer_norm,shape=3x5 | cat");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 15) << o.output;
  std::ifstream f(pidfile);
  int pid = 0;
  ASSERT_TRUE(f >> pid) << "the plugin did not run: " << o.output;
  // Gone: no such process, or a zombie (killed, waiting for an init that may never reap it).
  auto alive = [](int p) {
    std::ifstream stat("/proc/" + std::to_string(p) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return false;
    const size_t paren = line.rfind(") ");
    return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
  };
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i, usleep(20000)) gone = !alive(pid);
  EXPECT_TRUE(gone) << "grandchild " << pid << " still running";
  std::filesystem::remove(pidfile);
}

TEST(PluginIsolation, MetamorphicReportsACrashingPluginAsFailed) {
  const auto o = sh(kBin + " metamorphic --backend " + plugin("segv") + " --case batch_norm,shape=2x3x4");
  EXPECT_EQ(o.exit_code, 1) << o.output;
  EXPECT_NE(o.output.find("CRASH all batch_norm"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("SIGSEGV"), std::string::npos) << o.output;
  EXPECT_EQ(o.output.find("PASS"), std::string::npos) << o.output;
}

TEST(PluginIsolation, BenchRunsAPlugin) {
  const auto o = sh(kBin + " bench --backend " + kExample +
                    " --case layer_norm,shape=4x8 --repetitions 1 --min-time 0.001");
  EXPECT_EQ(o.exit_code, 0) << o.output;
  EXPECT_EQ(o.output.find("--timeout"), std::string::npos) << o.output;
}

// Ctrl-C during a plugin call ends the run at once, as an interrupted run (exit 130, report
// incomplete); the call is not recorded as the plugin's TIMEOUT.
TEST(PluginIsolation, AnInterruptDuringACallStopsAtOnceAndBlamesNoOne) {
  const std::string out = temp_path("nc_interrupt") + ".txt", json = temp_path("nc_interrupt") + ".json";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd = "exec " + kBin + " --backend " + plugin("hang") +
                            " --timeout 60 --case layer_norm,shape=3x5 --json " + json + " > " + out + " 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  usleep(1500 * 1000);  // loaded and inside the call
  const auto t0 = std::chrono::steady_clock::now();
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::stringstream text;
  text << std::ifstream(out).rdbuf();
  EXPECT_LT(seconds, 2.0) << text.str();
  ASSERT_TRUE(WIFEXITED(status)) << text.str();
  EXPECT_EQ(WEXITSTATUS(status), 130) << text.str();
  EXPECT_EQ(text.str().find("TIMEOUT"), std::string::npos) << text.str();
  const auto j = nlohmann::json::parse(std::ifstream(json));
  EXPECT_FALSE(j["complete"].get<bool>());
  EXPECT_EQ(j["cases"].size(), 0u);
  std::filesystem::remove(out);
  std::filesystem::remove(json);
}

/// A one-tensor call (layer_norm 1×4 forward: x and y only) for driving a plugin directly.
struct TinyCall {
  float x[4] = {1, 2, 3, 4}, y[4] = {};
  RunArgs args;
  TinyCall() {
    args.op = Op::layer_norm;
    args.pass = Pass::forward_training;
    args.rank = 2;
    args.dims[0] = 1, args.dims[1] = 4;
    for (auto [t, p] : {std::pair{&args.x, x}, std::pair{&args.y, y}}) {
      t->data = p;
      t->rank = 2;
      t->dims[0] = 1, t->dims[1] = 4;
      t->strides[0] = 4, t->strides[1] = 1;
    }
  }
};

// One worker serves every call and runs init once; after a crash a new one is started (and
// initialised), and the crash is the call's outcome.
TEST(PluginWorker, IsPersistentInitialisedOnceAndRestartedAfterACrash) {
  auto b = load_plugin(plugin("stateful"), 5, true);
  TinyCall t;
  const RunResult r1 = b->run(t.args), r2 = b->run(t.args), r3 = b->run(t.args), r4 = b->run(t.args);
  auto pid_of = [](const std::string& m) { return m.substr(m.find("pid ")); };
  EXPECT_EQ(r1.message.substr(0, 7), "call 1,") << r1.message;
  EXPECT_EQ(r2.message.substr(0, 7), "call 2,") << r2.message;
  EXPECT_NE(r1.message.find("init 1"), std::string::npos) << r1.message;
  EXPECT_EQ(pid_of(r1.message), pid_of(r2.message)) << "one worker for both calls";
  EXPECT_EQ(r1.message.find("pid " + std::to_string(getpid()) + ","), std::string::npos) << "called in this process";
  EXPECT_EQ(r3.fault, RunResult::Fault::crash) << r3.message;
  EXPECT_NE(r3.message.find("SIGSEGV"), std::string::npos) << r3.message;
  EXPECT_EQ(r4.message.substr(0, 7), "call 1,") << "a fresh worker: " << r4.message;
  EXPECT_NE(r4.message.find("init 1"), std::string::npos) << r4.message;
  EXPECT_NE(pid_of(r4.message), pid_of(r1.message));
  // --in-process: the same plugin in this very process, init called once.
  auto in = load_plugin(plugin("stateful"), 5, false);
  const RunResult p1 = in->run(t.args);
  EXPECT_EQ(p1.message, fmt::format("call 1, pid {}, init 1, in_place 0", getpid()));
  // ABI 1.1's in_place flag: set when y is x's buffer, in the worker and in process.
  TinyCall inplace;
  inplace.args.y = inplace.args.x;
  EXPECT_NE(in->run(inplace.args).message.find("in_place 1"), std::string::npos);
  const RunResult w5 = b->run(inplace.args);
  EXPECT_NE(w5.message.find("call 2,"), std::string::npos) << w5.message;
  EXPECT_NE(w5.message.find("in_place 1"), std::string::npos) << w5.message;
  EXPECT_NE(r1.message.find("in_place 0"), std::string::npos) << r1.message;
}

// ABI 1.1 declarations: blocked sums with their block count, ρ, and a profile per path.
TEST(PluginAbi11, PrecisionProfilePerPathReachesTheBudget) {
  auto b = load_plugin(plugin("profile"), 5, true);
  const PrecisionProfile all = b->capabilities().precision;
  EXPECT_EQ(all.summation, Summation::blocked);
  EXPECT_EQ(all.block, 8);
  EXPECT_EQ(all.rsqrt_error, 4);
  EXPECT_FALSE(all.accumulation.has_value());
  const PrecisionProfile ln = b->precision(Op::layer_norm, DType::f32, Layout::nchw);
  EXPECT_EQ(ln.summation, Summation::pairwise);
  EXPECT_EQ(ln.rsqrt_error, 4) << "the query starts from the table-wide values";
  const PrecisionProfile bn_nhwc = b->precision(Op::batch_norm, DType::f32, Layout::nhwc);
  ASSERT_TRUE(bn_nhwc.accumulation.has_value());
  EXPECT_EQ(*bn_nhwc.accumulation, DType::f16);
  EXPECT_EQ(bn_nhwc.summation, Summation::blocked);
  const PrecisionProfile bn_nchw = b->precision(Op::batch_norm, DType::f32, Layout::nchw);
  EXPECT_FALSE(bn_nchw.accumulation.has_value());
  EXPECT_EQ(bn_nchw.block, 8);
}

// A plugin binary built against the ABI 1.0 header (tests/plugins/abi_1_0: its nc_plugin ends
// before the 1.1 fields) still loads, is read as 1.0, and gives the same results as the same
// source built against the current header.
TEST(PluginAbi11, APluginBuiltAgainstAbi10StillLoadsAndPasses) {
  EXPECT_LT(plugin::kPluginSize10, sizeof(nc_plugin)) << "ABI 1.1 appended fields";
  EXPECT_EQ(plugin::kPluginSize10, 80u) << "the 1.0 layout on LP64: 3×4 + pad + 3 pointers + 4×4 + pointer + 2×4 + pointer";
  auto old = load_plugin(plugin("example_abi_1_0"), 60, true);
  auto now = load_plugin(kExample, 60, true);
  EXPECT_NE(old->version().find("ABI 1.0"), std::string::npos) << old->version();
  EXPECT_NE(now->version().find(fmt::format("ABI 1.{}", NC_ABI_MINOR)), std::string::npos) << now->version();
  int passed = 0;
  for (const auto& c : load_suite("smoke").cases) {
    const Problem p = parse_descriptor(c.descriptor);
    const CaseResult a = run_case(*old, p, {}), b = run_case(*now, p, {});
    SCOPED_TRACE(c.descriptor);
    EXPECT_EQ(a.verdict, b.verdict) << a.reason;
    ASSERT_EQ(a.tensors.size(), b.tensors.size());
    for (size_t i = 0; i < a.tensors.size(); ++i) EXPECT_EQ(a.tensors[i].worst.got, b.tensors[i].worst.got);
    passed += a.verdict == Verdict::pass;
  }
  EXPECT_GE(passed, 5);
}

// Device buffers: tests/plugins/cuda_staged.c takes CUDA memory (and checks that it is), stages it
// to the host and runs the example's kernel. Where a device is present it must pass like the
// example; here (no GPU) every case is UNSUPPORTED with the reason, and the test says it skipped.
TEST(PluginAbi11, DeviceBuffersAreStagedOrTheCaseIsUnsupportedWithTheReason) {
  auto b = load_plugin(plugin("cuda_staged"), 60, true);
  bool noted = false;
  for (const auto& n : b->capabilities().notes) noted |= n.find("takes CUDA device buffers on device 0") != std::string::npos;
  EXPECT_TRUE(noted);
  auto example = load_plugin(kExample, 60, true);
  int passed = 0;
  for (const auto& c : load_suite("smoke").cases) {
    const Problem p = parse_descriptor(c.descriptor);
    const CaseResult r = run_case(*b, p, {}), want = run_case(*example, p, {});
    SCOPED_TRACE(c.descriptor);
    if (r.verdict == Verdict::unsupported && want.verdict != Verdict::unsupported) {
      EXPECT_NE(r.reason.find("the plugin takes CUDA device buffers (device 0), and they cannot be staged here"),
                std::string::npos)
          << r.reason;
      GTEST_SKIP() << "no CUDA device to stage to: " << r.reason;
    }
    EXPECT_EQ(r.verdict, want.verdict) << r.reason;
    passed += r.verdict == Verdict::pass;
  }
  EXPECT_GE(passed, 5);
  // --in-process has no worker to stage: said so, never a call on host pointers.
  auto in = load_plugin(plugin("cuda_staged"), 60, false);
  const CaseResult r = run_case(*in, parse_descriptor("layer_norm,shape=3x5"), {});
  EXPECT_EQ(r.verdict, Verdict::unsupported);
  EXPECT_NE(r.reason.find("only the worker stages"), std::string::npos) << r.reason;
}

// ABI 1.1 params = NC_PARAMS_DATA_DTYPE: a bf16 layer_norm that rounds gamma, beta and its saved
// statistics to bf16 (as PyTorch 1.13 does) fails an f32 budget on the statistics, and passes
// once it declares so; its backward passes, which have no such budget, are UNSUPPORTED.
TEST(PluginAbi11, ParametersKeptInTheDataDtypeAreBudgetedAsSuch) {
  const std::string cases = " --case layer_norm,shape=4x64,dtype=bf16 --case layer_norm,shape=3x4x8,dtype=bf16,norm_dims=2";
  const auto undeclared = sh(kBin + " --backend " + plugin("bf16_params") + cases);
  EXPECT_EQ(undeclared.exit_code, 1) << undeclared.output;
  EXPECT_NE(undeclared.output.find("FAIL  layer_norm"), std::string::npos) << undeclared.output;
  const auto declared = sh(kBin + " --backend " + plugin("bf16_params_declared") + cases);
  EXPECT_EQ(declared.exit_code, 0) << declared.output;
  EXPECT_NE(declared.output.find("2 of 2 cases passed"), std::string::npos) << declared.output;
  auto b = load_plugin(plugin("bf16_params_declared"), 5, true);
  EXPECT_TRUE(b->capabilities().precision.params_in_data_dtype);
  const CaseResult back = run_case(*b, parse_descriptor("layer_norm,shape=4x64,dtype=bf16,pass=backward_training"), {});
  EXPECT_EQ(back.verdict, Verdict::unsupported);
  EXPECT_NE(back.reason.find("no backward budget"), std::string::npos) << back.reason;
}

}  // namespace
}  // namespace normcheck
