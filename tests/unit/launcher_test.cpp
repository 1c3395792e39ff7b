// The launcher's command lines and how it explains a failed job.
#include <gtest/gtest.h>

#include "vacc/launch/launcher.h"

namespace vacc {
namespace {

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(Launcher, LocalFlavorRunsMpirunWithOneRankPerDevice) {
  const LaunchCommand c = make_launch_command(parse_flavor_name("cpu-4"), {"vacc", "train"}, 2);
  EXPECT_EQ(c.argv[0], "mpirun");
  auto np = std::find(c.argv.begin(), c.argv.end(), "-np");
  ASSERT_NE(np, c.argv.end());
  EXPECT_EQ(*(np + 1), "4");
  EXPECT_TRUE(has(c.argv, "--oversubscribe")) << "4 ranks on 2 cores";
  EXPECT_EQ(c.argv[c.argv.size() - 2], "vacc");
  EXPECT_EQ(c.argv.back(), "train");
  EXPECT_FALSE(has(make_launch_command(parse_flavor_name("cpu-2"), {"vacc"}, 2).argv,
                   "--oversubscribe"));
}

TEST(Launcher, SlurmFlavorRunsSrunWithPmix) {
  Flavor f = parse_flavor_name("cpu-2");
  f.launcher.kind = LauncherKind::Slurm;
  f.launcher.partition = "debug";
  f.nodes = 3;
  const LaunchCommand c = make_launch_command(f, {"vacc", "train"}, 8);
  EXPECT_EQ(c.argv[0], "srun");
  EXPECT_TRUE(has(c.argv, "--ntasks=6"));
  EXPECT_TRUE(has(c.argv, "--mpi=pmix"));
  EXPECT_TRUE(has(c.argv, "--ntasks-per-node=2"));
}

TEST(Launcher, HostfileFlavorForwardsTheEnvironment) {
  Flavor f = parse_flavor_name("cpu-2");
  f.launcher.kind = LauncherKind::Mpirun;
  f.launcher.hostfile = "/etc/hosts.mpi";
  const LaunchCommand c = make_launch_command(f, {"vacc"}, 8);
  EXPECT_TRUE(has(c.argv, "--hostfile"));
  EXPECT_TRUE(has(c.argv, "/etc/hosts.mpi"));
  EXPECT_TRUE(has(c.argv, "PATH"));
}

TEST(Launcher, PinFlavorReplacesAnyGivenFlavor) {
  EXPECT_EQ(pin_flavor({"vacc", "train", "--flavor", "cpu-1", "--steps", "3"}, "cpu-4"),
            (std::vector<std::string>{"vacc", "train", "--steps", "3", "--flavor", "cpu-4"}));
  EXPECT_EQ(pin_flavor({"vacc", "train", "--flavor=cpu-1"}, "/a/f.json"),
            (std::vector<std::string>{"vacc", "train", "--flavor", "/a/f.json"}));
}

TEST(Launcher, DescribesTheRankThatDied) {
  EXPECT_EQ(describe_rank_failure(
                {"junk", "mpirun noticed that process rank 3 with PID 4242 on node gpu7 exited on "
                         "signal 9 (Killed)."}),
            "rank 3 (pid 4242) on host gpu7 died: killed by signal 9 (Killed)");
  EXPECT_EQ(describe_rank_failure({"srun: error: node2: task 5: Exited with exit code 1"}),
            "rank 5 on host node2 failed: Exited with exit code 1");
  EXPECT_EQ(describe_rank_failure({"vacc: error: rank 2 (host h1): out of memory on cpu:0",
                                   "MPI_ABORT was invoked on rank 2 in communicator"}),
            "rank 2 on host h1 failed (its error is above)");
  EXPECT_EQ(describe_rank_failure({"  Process name: [[5203,1],1]", "  Exit code:    3"}),
            "rank 1 exited with code 3");
  EXPECT_EQ(describe_rank_failure({"nothing to see"}), "");
}

}  // namespace
}  // namespace vacc
