// wmla_args_test.cc

#include "kiln/api/wmla_args.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "kiln/base/testing/status_matchers.h"

namespace kiln::api {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

TEST(SplitArgsTest, SplitsOnBlanksAndHonoursQuotes) {
  KILN_ASSERT_OK_AND_ASSIGN(auto words,
                            SplitArgs("  a\tb  'c d' \"e \\\"f\\\" \\n\" g\\ h i'j'\"k\" ''"));
  EXPECT_THAT(words, ElementsAre("a", "b", "c d", "e \"f\" \\n", "g h", "ijk", ""));
  KILN_ASSERT_OK_AND_ASSIGN(auto none, SplitArgs(" \t\n"));
  EXPECT_THAT(none, IsEmpty());
}

TEST(SplitArgsTest, RefusesUnclosedQuotesAndTrailingBackslash) {
  EXPECT_THAT(SplitArgs("a 'b"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("single quote")));
  EXPECT_THAT(SplitArgs("a \"b"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("double quote")));
  EXPECT_THAT(SplitArgs("a \\"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lone backslash")));
  EXPECT_THAT(SplitArgs(std::string("a\0b", 3)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NUL byte")));
  std::string many;
  for (int i = 0; i < 4001; ++i) many += "a ";
  EXPECT_THAT(SplitArgs(many),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than 4000 words")));
  EXPECT_THAT(SplitArgs("--model-main \xba\xba.py"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid UTF-8")));
  EXPECT_THAT(SplitArgs("\xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid UTF-8")));
  KILN_EXPECT_OK(SplitArgs("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\xa5"));
  EXPECT_THAT(SplitArgs(std::string(129 << 10, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("longer than 128 KiB")));
}

TEST(ParseWmlaArgsTest, ReadsTheNotebookArgs) {
  KILN_ASSERT_OK_AND_ASSIGN(
      WmlaArgs args,
      ParseWmlaArgs("--exec-start PyTorch --cs-datastore-meta type=fs --python-version 3.6 "
                    "--gpuPerWorker 1 --model-main pytorch_mnist_HPO.py --model-dir pytorch_hpo "
                    "--epochs 3 --debug-level debug"));
  EXPECT_EQ(args.framework, "PyTorch");
  EXPECT_EQ(args.model_main, "pytorch_mnist_HPO.py");
  EXPECT_EQ(args.model_dir, "pytorch_hpo");
  EXPECT_EQ(args.gpus, 1);
  EXPECT_EQ(args.data_path, "");
  EXPECT_THAT(args.script_args, ElementsAre("--epochs", "3"));
  EXPECT_THAT(args.notes, ElementsAre(HasSubstr("--python-version 3.6: ignored"),
                                      HasSubstr("--debug-level debug: ignored")));
}

TEST(ParseWmlaArgsTest, ForwardsUnknownWordsInOrderAndEverythingAfterDoubleDash) {
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs args,
                            ParseWmlaArgs("--lr=0.1 pos --model-main=a/train.py --batch 8 -- "
                                          "--model-dir x --gpuPerWorker 2"));
  EXPECT_EQ(args.model_main, "a/train.py");
  EXPECT_EQ(args.model_dir, "");
  EXPECT_EQ(args.gpus, 0);
  EXPECT_THAT(args.script_args, ElementsAre("--lr=0.1", "pos", "--batch", "8", "--model-dir", "x",
                                            "--gpuPerWorker", "2"));
}

TEST(ParseWmlaArgsTest, MatchesFrameworksIgnoringCaseAndDefaultsToPyTorch) {
  EXPECT_EQ(ParseWmlaArgs("--model-main t.py").value().framework, "PyTorch");
  EXPECT_EQ(ParseWmlaArgs("--exec-start pytorch --model-main t.py").value().framework, "PyTorch");
  EXPECT_EQ(ParseWmlaArgs("--exec-start TensorFlow --model-main t.py").value().framework,
            "tensorflow");
}

TEST(ParseWmlaArgsTest, RefusesTensorFlowDistributedAndUnknownFrameworks) {
  EXPECT_THAT(ParseWmlaArgs("--exec-start disttensorflow --numWorker 2 --model-main t.py"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--exec-start disttensorflow (distributed TensorFlow) is not "
                                 "supported: Kiln runs distributed PyTorch; use --exec-start "
                                 "distPyTorch --numWorker N (N workers) or --exec-start "
                                 "edtPyTorch --numWorker N (elastic, up to N workers)")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start edtTensorflow --model-main t.py"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("edtTensorflow (elastic distributed TensorFlow) is not "
                                 "supported: Kiln runs distributed PyTorch")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start edtKeras --model-main t.py"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("edtKeras (elastic distributed Keras) is not supported")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start Caffe --model-main t.py"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--exec-start Caffe is not a known framework; known: PyTorch")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start distPyTorch --model-main t.py --numPs 1"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--numPs is for disttensorflow's parameter servers, which Kiln "
                                 "does not run")));
  EXPECT_THAT(ParseWmlaArgs("--pbmodel-cmd train --pbmodel-name AlexNet"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("prebuilt models")));
}

TEST(ParseWmlaArgsTest, DistPyTorchIsAStaticJobOfNumWorkerWorkers) {
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs args,
                            ParseWmlaArgs("--exec-start distPyTorch --numWorker 3 --gpuPerWorker 1 "
                                          "--model-main t.py --epochs 2"));
  EXPECT_EQ(args.framework, "distPyTorch");
  EXPECT_TRUE(args.distributed);
  EXPECT_FALSE(args.elastic);
  EXPECT_EQ(args.num_workers, 3);
  EXPECT_EQ(args.gpus, 1);
  // distPyTorch scripts read the PyTorch environment, not the dlicmd options.
  EXPECT_THAT(args.script_args, ElementsAre("--epochs", "2"));

  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs one,
                            ParseWmlaArgs("--exec-start distpytorch --model-main t.py"));
  EXPECT_EQ(one.framework, "distPyTorch");
  EXPECT_TRUE(one.distributed);
  EXPECT_EQ(one.num_workers, 1);
}

TEST(ParseWmlaArgsTest, EdtPyTorchTakesItsMostWorkersFromNumWorker) {
  // WMLA 2.x's submission (wmla-api.md §2.3).
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs args,
                            ParseWmlaArgs("--exec-start edtPyTorch --cs-datastore-meta type=fs "
                                          "--numWorker 2 --model-main elastic-main.py --model-dir "
                                          "resnet-wmla --lr 0.1"));
  EXPECT_EQ(args.framework, "edtPyTorch");
  EXPECT_TRUE(args.distributed);
  EXPECT_TRUE(args.elastic);
  EXPECT_EQ(args.num_workers, 2);
  EXPECT_EQ(args.gpus, 0);
  // The script reads --numWorker (WMLA's EDT template); the user's words come after it.
  EXPECT_THAT(args.script_args, ElementsAre("--numWorker", "2", "--lr", "0.1"));

  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs gpus,
                            ParseWmlaArgs("--numWorker 4 --gpuPerWorker 1 --exec-start edtpytorch "
                                          "--model-main t.py -- --numWorker 8"));
  EXPECT_EQ(gpus.framework, "edtPyTorch");
  EXPECT_EQ(gpus.num_workers, 4);
  EXPECT_EQ(gpus.gpus, 1);  // per worker
  EXPECT_THAT(gpus.script_args,
              ElementsAre("--numWorker", "4", "--gpuPerWorker", "1", "--numWorker", "8"));

  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs bare,
                            ParseWmlaArgs("--exec-start edtPyTorch --model-main t.py"));
  EXPECT_TRUE(bare.elastic);
  EXPECT_EQ(bare.num_workers, 1);
  EXPECT_THAT(bare.script_args, ElementsAre("--numWorker", "1"));
}

TEST(ParseWmlaArgsTest, EdtPyTorchTakesItsMostWorkersFromEdtOptions) {
  // WMLA 1.2.x's submission (wmla-api.md §2.3).
  KILN_ASSERT_OK_AND_ASSIGN(
      WmlaArgs args,
      ParseWmlaArgs("--exec-start edtPyTorch --cs-datastore-meta type=fs,data_path=pytorch-mnist "
                    "--model-dir pytorch_edt --edt-options maxWorkers=2 --model-main "
                    "pytorch_mnist_EDT.py --epochs 15"));
  EXPECT_TRUE(args.elastic);
  EXPECT_EQ(args.num_workers, 2);
  EXPECT_EQ(args.data_path, "pytorch-mnist");
  EXPECT_THAT(args.script_args, ElementsAre("--numWorker", "2", "--epochs", "15"));

  EXPECT_EQ(ParseWmlaArgs("--exec-start edtPyTorch --model-main t.py --edt-options "
                          "\" maxworkers = 3 ,\"")
                .value()
                .num_workers,
            3);
  // Both forms at once are fine when they agree.
  EXPECT_EQ(ParseWmlaArgs("--exec-start edtPyTorch --model-main t.py --numWorker 2 "
                          "--edt-options=maxWorkers=2")
                .value()
                .num_workers,
            2);
}

TEST(ParseWmlaArgsTest, RefusesBadWorkerOptions) {
  EXPECT_THAT(ParseWmlaArgs("--model-main t.py --numWorker 2"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--numWorker 2 needs a distributed framework: --exec-start "
                                 "distPyTorch (exactly 2 workers) or edtPyTorch (elastic, 1 to 2 "
                                 "workers); --exec-start PyTorch runs one worker")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start tensorflow --numWorker 3 --model-main t.py"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--exec-start tensorflow runs one worker")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start distPyTorch --numWorker 0 --model-main t.py"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--numWorker must be a whole number from 1 to 1024, got \"0\"")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start distPyTorch --numWorker 1025 --model-main t.py"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("from 1 to 1024")));
  EXPECT_THAT(ParseWmlaArgs("--model-main t.py --edt-options maxWorkers=2"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--edt-options is for elastic jobs: add --exec-start edtPyTorch "
                                 "(this one is --exec-start PyTorch), or drop it")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start distPyTorch --model-main t.py --edt-options "
                            "maxWorkers=2"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("(this one is --exec-start distPyTorch)")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start edtPyTorch --model-main t.py --edt-options "
                            "maxWorkers=2,minWorkers=1"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--edt-options: unknown option \"minWorkers\"; Kiln knows: "
                                 "maxWorkers (e.g. --edt-options maxWorkers=2)")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start edtPyTorch --model-main t.py --edt-options maxWorkers"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--edt-options \"maxWorkers\" is not key=value")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start edtPyTorch --model-main t.py --edt-options "
                            "maxWorkers=two"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--edt-options maxWorkers must be a whole number from 1 to "
                                 "1024, got \"two\"")));
  EXPECT_THAT(
      ParseWmlaArgs("--exec-start edtPyTorch --model-main t.py --edt-options"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--edt-options needs a value")));
  EXPECT_THAT(ParseWmlaArgs("--exec-start edtPyTorch --model-main t.py --numWorker 2 "
                            "--edt-options maxWorkers=3"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--numWorker 2 and --edt-options maxWorkers=3 disagree: give "
                                 "the most workers once")));
}

TEST(ParseWmlaArgsTest, NeedsModelMain) {
  EXPECT_THAT(ParseWmlaArgs("--exec-start PyTorch --epochs 3"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--model-main is missing: name the script to run")));
  EXPECT_THAT(ParseWmlaArgs(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--model-main is missing")));
}

TEST(ParseWmlaArgsTest, RefusesMissingOrBadValues) {
  EXPECT_THAT(ParseWmlaArgs("--model-main"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--model-main needs a value, e.g. --model-main train.py")));
  EXPECT_THAT(ParseWmlaArgs("--model-dir --model-main t.py"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--model-dir needs a value")));
  EXPECT_THAT(ParseWmlaArgs("--model-main /etc/t.py"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("must name the script inside the model folder")));
  EXPECT_THAT(ParseWmlaArgs("--model-main ../t.py"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inside the model folder")));
  EXPECT_THAT(ParseWmlaArgs("--model-main t.py --model-dir ../up"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--model-dir \"../up\" must be the folder at the top")));
  EXPECT_THAT(ParseWmlaArgs("--model-main t.py --gpuPerWorker two"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--gpuPerWorker must be a whole number from 0 to 256, got "
                                 "\"two\"")));
  EXPECT_THAT(ParseWmlaArgs("--model-main t.py --workerDeviceNum 999"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--workerDeviceNum must")));
  EXPECT_THAT(ParseWmlaArgs("--model-main t.py --workerDeviceType tpu"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--workerDeviceType must be cpu or gpu")));
  EXPECT_THAT(ParseWmlaArgs("--model-main t.py --cs-datastore-meta data_path=x"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs type=fs")));
  EXPECT_THAT(ParseWmlaArgs("--model-main t.py --cs-datastore-meta type=s3"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("type=s3 is not supported")));
}

TEST(ParseWmlaArgsTest, DeviceTypeDecidesGpus) {
  EXPECT_EQ(ParseWmlaArgs("--model-main t.py --workerDeviceNum 2").value().gpus, 2);
  EXPECT_EQ(ParseWmlaArgs("--model-main t.py --workerDeviceType gpu").value().gpus, 1);
  EXPECT_EQ(ParseWmlaArgs("--model-main t.py --workerDeviceType GPU --gpuPerWorker 3").value().gpus,
            3);
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs cpu,
                            ParseWmlaArgs("--model-main t.py --gpuPerWorker 1 --workerDeviceType "
                                          "cpu --numWorker 1"));
  EXPECT_EQ(cpu.gpus, 0);
  EXPECT_THAT(cpu.notes, ElementsAre(HasSubstr("the job gets no GPU (1 asked for)")));
}

TEST(ParseWmlaArgsTest, RecordsIgnoredOptionsWithTheirReason) {
  KILN_ASSERT_OK_AND_ASSIGN(
      WmlaArgs args, ParseWmlaArgs("--model-main t.py --ig wml-ig --workerMemory 4G --appName "
                                   "mnist --cs-datastore-meta type=fs,data_path=d,other=1"));
  EXPECT_EQ(args.app_name, "mnist");
  EXPECT_EQ(args.data_path, "d");
  EXPECT_THAT(args.notes, ElementsAre(HasSubstr("--ig wml-ig: ignored (Kiln has no instance"),
                                      HasSubstr("--workerMemory 4G: ignored"),
                                      HasSubstr("--cs-datastore-meta other: ignored")));
}

TEST(WmlaArgsToJobSpecTest, BuildsThePythonCommandInTheModelDir) {
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs args,
                            ParseWmlaArgs("--model-main src/train.py --model-dir pytorch_hpo/ "
                                          "--gpuPerWorker 2 --epochs 3"));
  master::JobSpec spec = WmlaArgsToJobSpec(args, {});
  EXPECT_THAT(spec.command, ElementsAre("python3", "src/train.py", "--epochs", "3"));
  EXPECT_EQ(spec.workdir, "pytorch_hpo");
  EXPECT_EQ(spec.name, "train.py");
  EXPECT_EQ(spec.resources.slots, 1);
  EXPECT_EQ(spec.resources.gpus, 2);
  EXPECT_THAT(spec.env, IsEmpty());
}

TEST(WmlaArgsToJobSpecTest, PlacesTheDataPathUnderDliDataFs) {
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs rel,
                            ParseWmlaArgs("--model-main t.py --appName run1 --cs-datastore-meta "
                                          "type=fs,data_path=pytorch-mnist"));
  master::JobSpec with_fs = WmlaArgsToJobSpec(rel, {.data_fs = "/dli/data"});
  EXPECT_EQ(with_fs.name, "run1");
  EXPECT_THAT(with_fs.env, UnorderedElementsAre(Pair("DATA_DIR", "/dli/data/pytorch-mnist"),
                                                Pair("DLI_DATA_FS", "/dli/data")));
  EXPECT_THAT(WmlaArgsToJobSpec(rel, {}).env, ElementsAre(Pair("DATA_DIR", "pytorch-mnist")));
  KILN_ASSERT_OK_AND_ASSIGN(
      WmlaArgs abs, ParseWmlaArgs("--model-main t.py --cs-datastore-meta type=fs,data_path=/d"));
  EXPECT_EQ(WmlaArgsToJobSpec(abs, {.data_fs = "/dli/data"}).env.at("DATA_DIR"), "/d");
}

// Found by fuzz/wmla_args_fuzz: a long script name made a job name over JobSpec's limit.
TEST(WmlaArgsToJobSpecTest, LongNamesStayWithinTheJobNameLimit) {
  std::string script = "\xc3\xa9" + std::string(300, 'a') + ".py";
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs args, ParseWmlaArgs("--model-main " + script));
  master::JobSpec spec = WmlaArgsToJobSpec(args, {});
  EXPECT_EQ(spec.name.size(), 200u);
  KILN_EXPECT_OK(master::ParseJobSpec(master::JobSpecToJson(spec)));
  EXPECT_THAT(ParseWmlaArgs("--model-main t.py --appName " + std::string(201, 'n')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--appName is longer")));
}

TEST(WmlaArgsToJobSpecTest, TheSpecPassesJobValidation) {
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs args,
                            ParseWmlaArgs("--model-main t.py --model-dir m --lr 0.1 "
                                          "--cs-datastore-meta type=fs,data_path=/d"));
  master::JobSpec spec = WmlaArgsToJobSpec(args, {.data_fs = "/fs"});
  KILN_ASSERT_OK_AND_ASSIGN(master::JobSpec parsed,
                            master::ParseJobSpec(master::JobSpecToJson(spec)));
  EXPECT_EQ(parsed.command, spec.command);
  EXPECT_EQ(parsed.workdir, "m");
}

TEST(WmlaArgsToJobSpecTest, DistPyTorchMakesAStaticJob) {
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs args,
                            ParseWmlaArgs("--exec-start distPyTorch --numWorker 2 --gpuPerWorker "
                                          "1 --model-main t.py"));
  master::JobSpec spec = WmlaArgsToJobSpec(args, {});
  ASSERT_TRUE(spec.workers.has_value());
  EXPECT_FALSE(spec.workers->elastic);
  EXPECT_EQ(spec.workers->min, 2);
  EXPECT_EQ(spec.workers->max, 2);
  EXPECT_EQ(spec.resources.slots, 1);  // per worker
  EXPECT_EQ(spec.resources.gpus, 1);
  EXPECT_THAT(spec.env, IsEmpty());
  KILN_ASSERT_OK_AND_ASSIGN(master::JobSpec parsed,
                            master::ParseJobSpec(master::JobSpecToJson(spec)));
  ASSERT_TRUE(parsed.workers.has_value());
  EXPECT_FALSE(parsed.workers->elastic);
  EXPECT_EQ(parsed.workers->min, 2);
}

TEST(WmlaArgsToJobSpecTest, EdtPyTorchMakesAnElasticJobFromOneWorker) {
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs args,
                            ParseWmlaArgs("--exec-start edtPyTorch --edt-options maxWorkers=4 "
                                          "--model-main t.py"));
  master::JobSpec spec = WmlaArgsToJobSpec(args, {});
  ASSERT_TRUE(spec.workers.has_value());
  EXPECT_TRUE(spec.workers->elastic);
  EXPECT_EQ(spec.workers->min, 1);
  EXPECT_EQ(spec.workers->max, 4);
  EXPECT_EQ(spec.workers->min_workers_timeout_s, 600);
  EXPECT_EQ(spec.workers->max_worker_failures, 15);
  EXPECT_THAT(spec.command, ElementsAre("python3", "t.py", "--numWorker", "4"));
  EXPECT_THAT(spec.env, ElementsAre(Pair("FABRIC_HOME", "")));
  KILN_ASSERT_OK_AND_ASSIGN(master::JobSpec parsed,
                            master::ParseJobSpec(master::JobSpecToJson(spec)));
  ASSERT_TRUE(parsed.workers.has_value());
  EXPECT_TRUE(parsed.workers->elastic);
  EXPECT_EQ(parsed.workers->min, 1);
  EXPECT_EQ(parsed.workers->max, 4);
  EXPECT_EQ(parsed.workers->max_worker_failures, 15);
}

TEST(WmlaArgsToJobSpecTest, SingleNodeFrameworksMakeSingleJobs) {
  KILN_ASSERT_OK_AND_ASSIGN(WmlaArgs args, ParseWmlaArgs("--model-main t.py --numWorker 1"));
  EXPECT_FALSE(args.distributed);
  EXPECT_FALSE(WmlaArgsToJobSpec(args, {}).workers.has_value());
}

TEST(WmlaFrameworksTest, ListsSupportedSingleNodeFrameworksFirstAndThePyTorchDistributedOnes) {
  const auto& f = WmlaFrameworks();
  ASSERT_GE(f.size(), 3u);
  EXPECT_EQ(f[0].name, "PyTorch");
  EXPECT_TRUE(f[0].supported);
  EXPECT_EQ(f[0].max_workers, 1);
  std::map<std::string, const WmlaFramework*> by_name;
  for (const auto& x : f) by_name[x.name] = &x;
  for (const char* name : {"distPyTorch", "edtPyTorch"}) {
    ASSERT_TRUE(by_name.count(name)) << name;
    EXPECT_TRUE(by_name[name]->supported) << name;
    EXPECT_EQ(by_name[name]->exec_mode, "distributed");
    EXPECT_EQ(by_name[name]->max_workers, 1024);
  }
  EXPECT_EQ(by_name["edtPyTorch"]->app_name, "ElasticPyTorchTrain");
  for (const char* name : {"disttensorflow", "edtTensorflow", "edtKeras"}) {
    ASSERT_TRUE(by_name.count(name)) << name;
    EXPECT_FALSE(by_name[name]->supported) << name;
  }
}

}  // namespace
}  // namespace kiln::api
