"""The SLURM profile on a real single-node SLURM cluster (tests/cluster/slurm_cluster.sh).

The README's cluster commands are run exactly as written (`README_COMMANDS`, checked against the README's code
block), in a copy of the workflow whose `config/config.yaml` is the reduced demo. The tables of that run through
SLURM must equal those of the session's local run of the same config (the `demo_run` fixture); then the GPU
command re-runs one job of each model rule (and of two light rules) with one running job cancelled, and the
tables must still be the same.

Without SLURM (no `sbatch`, or a cluster that is not up or cannot be started) the cluster tests are skipped
with the reason; with CLIP_INTERP_REQUIRE_SLURM=1 (CI's SLURM step) the cluster is started when it is not up,
and a missing SLURM is a failure. The dry-run tests need no cluster.
"""

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from workflow_runs import REPO, SMALL_DEMO, copy_workflow, snakemake, write_config

pytestmark = pytest.mark.slow

REQUIRE_SLURM = os.environ.get("CLIP_INTERP_REQUIRE_SLURM", "") not in ("", "0")
CLUSTER_SCRIPT = REPO / "tests" / "cluster" / "slurm_cluster.sh"
PLUGIN_VERSION = "2.8.0"
# The test cluster's names (tests/cluster/slurm_cluster.sh); the README's example values are the non-default ones.
ACCOUNT, PARTITION, DEFAULT_PARTITION, DEFAULT_ACCOUNT = "myproject", "compute", "debug", "ci"
MODEL_RULES = {"cache_text_activations", "cache_image_activations", "cache_cannot_activations", "causal_tracing",
               "image_ablation", "pair_patching", "site_tracing", "ablation_windows",
               "decompose_shard", "decomposition_text", "decomposition_segmentation", "head_neighbours",
               "heads_labels", "heads_scores"}
LIGHT_RULES = {"generate_synthetic_benchmark", "prepare_valse", "compute_scores", "causal_tracing_summary",
               "image_ablation_summary", "cross_model_profiles", "image_covariates", "probes",
               "gather_decomposition", "zero_shot_ablation", "textspan", "textspan_sweep", "waterbirds",
               "demo_word_pool",
               "heads_property_neighbours", "heads_topic_maps", "heads_contrastive_maps", "heads_image_neighbours",
               "heads_text_neighbours"}
ALL_RULES = MODEL_RULES | LIGHT_RULES | {"train_toy_clip", "subject_size", "token_positions", "cannot_pairs",
                                        "negator_selectivity", "cannot_selectivity", "preliminary_analyses",
                                        "reproduction_report", "extract_waterbirds", "decomposition_image_list",
                                        "heads_explorer_manifest", "heads_cross_model",
                                        "heads_reproduction_report"}

# The code block of the README's section "Running on a cluster", comments removed, in order.
README_COMMANDS = [
    f"python3 -m pip install snakemake-executor-plugin-slurm=={PLUGIN_VERSION}",
    f"export SBATCH_ACCOUNT={ACCOUNT} SBATCH_PARTITION={PARTITION}",
    "snakemake --cores 1 --until prepare_valse fetch_cannot",
    "snakemake --profile profiles/slurm",
    "snakemake --profile profiles/slurm --configfile config/config.yaml config/cluster.example.yaml",
]
INSTALL, EXPORT, FETCH, RUN_CPU, RUN_GPU = README_COMMANDS
RUN_TIMEOUT = 1800


def readme_cluster_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Running on a cluster", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [c for c in commands if c]


def test_readme_cluster_commands_are_the_tested_ones():
    assert readme_cluster_commands() == README_COMMANDS


def test_cluster_example_overlay_is_documented_and_pinned():
    readme = (REPO / "README.md").read_text()
    assert "config/cluster.example.yaml" in readme and "--sdm conda" in readme
    assert f"snakemake-executor-plugin-slurm=={PLUGIN_VERSION}" in (REPO / ".ci" / "run").read_text()
    from snakemake.profiles import ProfileConfigFileParser

    with open(REPO / "profiles" / "slurm" / "config.yaml") as stream:
        profile = ProfileConfigFileParser().parse(stream)
    assert profile["executor"] == "slurm"
    assert not {"use-conda", "software-deployment-method", "sdm"} & set(profile), "deployment is chosen per run"


# --- helpers ------------------------------------------------------------------------------------------------


def workflow_copy(dest: Path) -> Path:
    """A copy of the workflow and its profile whose default config (config/config.yaml) is the reduced demo."""
    workdir = copy_workflow(dest)
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    write_config(workdir, "demo.yaml", SMALL_DEMO, "config.yaml")
    return workdir


def clean_env(**extra) -> dict:
    """The environment without any SBATCH_/SLURM_ settings, so only what a test sets applies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SBATCH_", "SLURM_", "SNAKEMAKE_PROFILE"))}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def bash(workdir: Path, *commands: str, env=None) -> subprocess.Popen:
    """Start the commands in one bash (so an `export` applies to the next ones), stopping at the first failure."""
    script = "set -e\n" + "\n".join(commands) + "\n"
    return subprocess.Popen(["bash", "-c", script], cwd=workdir, env=env or clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout=RUN_TIMEOUT) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s:\n{out[-6000:]}")
    return proc.returncode, out


def run_ok(workdir: Path, *commands: str, env=None) -> str:
    code, out = finish(bash(workdir, *commands, env=env))
    assert code == 0, f"{commands} failed ({code}):\n{out[-8000:]}"
    return out


def sacct_jobs(workdir: Path) -> list[dict]:
    """This workdir's SLURM jobs (allocations only), oldest first."""
    fields = ["JobID", "Account", "Partition", "State", "Comment", "ReqTRES", "Start", "End", "WorkDir", "SubmitLine"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "-S", "now-1days", "-o", ",".join(fields)],
                         capture_output=True, text=True, check=True).stdout
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]
    return [r for r in rows if Path(r["WorkDir"]) == workdir]


def job_rule(job: dict) -> str | None:
    """The rule of a single-rule job, from the plugin's job comment `rule_<name>[_wildcards_<...>]`; None for a
    group job (whose comment is `rule_<group>_<rules...>`)."""
    match = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", job["Comment"])
    return match.group(1) if match and match.group(1) in ALL_RULES else None


def tables(workdir: Path) -> dict[str, Path]:
    return {str(p.relative_to(workdir)): p for p in sorted((workdir / "results").rglob("*.parquet"))}


def assert_same_tables(workdir: Path, reference: Path):
    ours, theirs = tables(workdir), tables(reference)
    assert ours.keys() == theirs.keys() and len(ours) > 20, sorted(set(ours) ^ set(theirs))
    for name in ours:
        pd.testing.assert_frame_equal(pd.read_parquet(ours[name]), pd.read_parquet(theirs[name]), check_exact=True,
                                      obj=name)
        assert pq.read_schema(ours[name]).metadata == pq.read_schema(theirs[name]).metadata, name
    assert not list((workdir / "results").rglob("*.part"))


# --- fixtures -----------------------------------------------------------------------------------------------


def _unavailable(reason: str):
    if REQUIRE_SLURM:
        pytest.fail(f"{reason}; CLIP_INTERP_REQUIRE_SLURM is set, so this is an error")
    pytest.skip(reason)


def _require_plugin():
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        _unavailable(f"snakemake-executor-plugin-slurm is not installed "
                     f"(python3 -m pip install snakemake-executor-plugin-slurm=={PLUGIN_VERSION})")


@pytest.fixture(scope="module")
def slurm():
    """A running SLURM cluster: the one already up, or one started here with tests/cluster/slurm_cluster.sh."""
    _require_plugin()
    if not shutil.which("sbatch"):
        _unavailable("SLURM is not installed (no sbatch); see tests/cluster/slurm_cluster.sh")
    started = False
    if subprocess.run(["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True).returncode != 0:
        if not REQUIRE_SLURM:
            pytest.skip("the test SLURM cluster is not up: start it with `bash tests/cluster/slurm_cluster.sh up`, "
                        "or set CLIP_INTERP_REQUIRE_SLURM=1 to start it here (.ci/run's SLURM step does)")
        proc = subprocess.run(["bash", str(CLUSTER_SCRIPT), "up"], capture_output=True, text=True)
        if proc.returncode != 0:
            _unavailable(f"the test SLURM cluster could not be started: {proc.stderr.strip()[-2000:]}")
        started = True
    yield
    if started:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "down"], capture_output=True)


# --- no cluster needed --------------------------------------------------------------------------------------


def test_profile_dry_run_needs_neither_conda_nor_slurm(tmp_path):
    """The shipped profile builds the DAG on a machine with neither conda nor SLURM on the PATH."""
    _require_plugin()
    workdir = workflow_copy(tmp_path / "wf")
    hidden = {"sbatch", "sinfo", "squeue", "sacct", "scontrol", "sacctmgr", "srun", "salloc", "scancel", "sshare",
              "conda", "mamba", "micromamba"}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in [os.path.dirname(sys.executable), *os.environ["PATH"].split(os.pathsep)]:
        for tool in Path(folder).glob("*") if Path(folder).is_dir() else []:
            if tool.name not in hidden and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    env = clean_env(PATH=str(bin_dir))
    assert shutil.which("sinfo", path=str(bin_dir)) is None and shutil.which("conda", path=str(bin_dir)) is None
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n"], cwd=workdir,
                          env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "causal_tracing" in out and "conda" not in out.lower()


def resources_by_rule(dry_run_output: str) -> dict[str, list[str]]:
    """rule -> the `resources:` lines of its jobs in a dry run's output."""
    found, rule = {}, None
    for line in dry_run_output.splitlines():
        match = re.match(r"\s*(?:local)?rule (\w+):", line)
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            found.setdefault(rule, []).append(line.strip())
    return found


def test_config_overlay_reaches_the_model_rules_resources(tmp_path):
    """`--configfile config/config.yaml config/cluster.example.yaml`: the overlay's nested values reach the jobs."""
    workdir = workflow_copy(tmp_path / "wf")
    config = workdir / "config"
    proc = snakemake(workdir, "-n", "--configfile", str(config / "config.yaml"), str(config / "cluster.example.yaml"))
    resources = resources_by_rule(proc.stdout + proc.stderr)
    planned = MODEL_RULES - {"decompose_shard"}  # its jobs exist once the checkpoint has listed the images
    assert planned <= set(resources), sorted(resources)
    for rule in planned:
        assert all("gpu=1" in line and "mem_mb=12000" in line for line in resources[rule]), (rule, resources[rule])
    for rule in LIGHT_RULES:
        assert all("gpu=" not in line for line in resources.get(rule, [])), (rule, resources.get(rule))
    plain = resources_by_rule(snakemake(workdir, "-n").stdout)
    assert all("gpu=0" in line and "mem_mb=4000," in line for line in plain["causal_tracing"])
    # the README's variant for the demo
    demo = snakemake(workdir, "-n", "--configfile", str(config / "demo.yaml"), str(config / "cluster.example.yaml"))
    assert all("gpu=1" in line and "mem_mb=12000" in line for line in resources_by_rule(demo.stdout)["causal_tracing"])


# --- on SLURM -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_run(slurm, demo_run, tmp_path_factory):
    """The README's commands (plugin install, account/partition by environment, fetch on the login node, the run
    through the profile) in a copy of the workflow: (workdir, their output, wall seconds, SLURM jobs)."""
    workdir = workflow_copy(tmp_path_factory.mktemp("slurm") / "wf")
    started = time.monotonic()
    out = run_ok(workdir, INSTALL, EXPORT, FETCH, RUN_CPU)
    return workdir, out, time.monotonic() - started, sacct_jobs(workdir)


def test_readme_commands_run_the_demo_on_slurm_with_the_local_tables(slurm_run, demo_run):
    workdir, out, wall, jobs = slurm_run
    assert_same_tables(workdir, demo_run.workdir)
    assert jobs, out[-4000:]
    print(f"\nSLURM run of the reduced demo: {len(jobs)} sbatch submissions, {wall:.0f} s (install, fetch, run)")
    for job in jobs:
        assert (job["Account"], job["Partition"]) == (ACCOUNT, PARTITION), job
        assert f" -A {ACCOUNT} -p {PARTITION} " in job["SubmitLine"], job
        assert job["State"] == "COMPLETED", job
        assert "gres/gpu" not in job["ReqTRES"], job
        assert "fetch" not in job["Comment"], "the fetch rules are local rules and run on the login node"
    assert MODEL_RULES <= {job_rule(job) for job in jobs}
    assert_one_job_per_shard(workdir, jobs)
    # each job's SLURM log is named in the output; the plugin deletes those of successful jobs
    assert f"(log: {workdir}/.snakemake/slurm_logs/rule_causal_tracing/" in out
    assert not list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))


def assert_one_job_per_shard(workdir: Path, jobs: list[dict]):
    """Every shard of every decomposed image set ran as its own SLURM job."""
    shards = sorted((workdir / "results").glob("decomposition/*/store/*/shard_*.h5"))
    shard_jobs = [job for job in jobs if job_rule(job) == "decompose_shard"]
    assert len(shards) >= 4 and len(shard_jobs) == len(shards), (shards, shard_jobs)
    assert len({job["Comment"] for job in shard_jobs}) == len(shards), shard_jobs


def _running_model_job(workdir: Path, known: set[str]) -> str | None:
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z|%M"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        jobid, comment, job_workdir, elapsed = line.split("|")
        if jobid in known or Path(job_workdir) != workdir:
            continue
        if any(comment.startswith(f"rule_{r}") for r in MODEL_RULES):
            if elapsed not in ("0:00", "0:01", "0:02"):  # let the rule get going
                return jobid
    return None


# Light rules re-run on the GPU command with the model rules, to check that they request no GPU (compute_scores
# runs in a group job, textspan in a job of its own).
GPU_RUN_LIGHT_RULES = ("compute_scores", "textspan")


def one_output_per_rule(workdir: Path, rules) -> list[str]:
    """The first output file of each of ``rules`` that `snakemake --summary` lists for the finished run."""
    outputs = {}
    for line in snakemake(workdir, "--summary").stdout.splitlines():
        fields = line.split("\t")
        if len(fields) > 2 and fields[2] in rules:
            outputs.setdefault(fields[2], fields[0])
    assert set(outputs) == set(rules), sorted(set(rules) - set(outputs))
    return sorted(outputs.values())


def test_gpu_overlay_run_survives_a_cancelled_job(slurm_run, demo_run):
    """The GPU command, forcing one job of each model rule (and of two light rules) on the finished run: model
    rules get --gpus=1 and the overlay's memory; a job cancelled with scancel while running is re-run (the
    profile's retry, then the command again) to the same tables."""
    workdir, _, _, cpu_jobs = slurm_run
    known = {job["JobID"] for job in cpu_jobs}
    targets = " ".join(one_output_per_rule(workdir, MODEL_RULES | set(GPU_RUN_LIGHT_RULES)))
    run_gpu = RUN_GPU.replace("snakemake ", f"snakemake {targets} ", 1)  # before the options' several values
    proc = bash(workdir, EXPORT, run_gpu + " --force")
    cancelled = None
    try:
        deadline = time.monotonic() + 600
        while cancelled is None:
            assert proc.poll() is None, \
                f"the run ended before a model job could be cancelled:\n{proc.stdout.read()[-6000:]}"
            assert time.monotonic() < deadline, "no model job ran within 600 s"
            cancelled = _running_model_job(workdir, known)
            time.sleep(0.5)
        subprocess.run(["scancel", cancelled], check=True)
        finish(proc)  # it may succeed (the profile retries the job once) or fail; the re-run must finish either way
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    run_ok(workdir, EXPORT, run_gpu)
    assert_same_tables(workdir, demo_run.workdir)

    jobs = [job for job in sacct_jobs(workdir) if job["JobID"] not in known]
    by_id = {job["JobID"]: job for job in jobs}
    assert by_id[cancelled]["State"].startswith("CANCELLED"), by_id[cancelled]
    rerun = [job for job in jobs if job["Comment"] == by_id[cancelled]["Comment"] and job["JobID"] != cancelled]
    assert rerun and rerun[-1]["State"] == "COMPLETED", jobs
    for job in jobs:
        assert (job["Account"], job["Partition"]) == (ACCOUNT, PARTITION), job
        assert f" -A {ACCOUNT} -p {PARTITION} " in job["SubmitLine"], job
        if job_rule(job) in MODEL_RULES:
            assert "gres/gpu=1" in job["ReqTRES"] and "mem=12000M" in job["ReqTRES"], job
            assert " --gpus=1 " in job["SubmitLine"], job
        elif job_rule(job) in LIGHT_RULES or job_rule(job) is None:  # group jobs hold light rules only
            assert "gres/gpu" not in job["ReqTRES"], job
    assert MODEL_RULES <= {job_rule(job) for job in jobs}
    for rule in GPU_RUN_LIGHT_RULES:  # on its own or in a group job (comment `rule_<group>_<rules...>`)
        assert any(rule in job["Comment"] and "gres/gpu" not in job["ReqTRES"] for job in jobs), (rule, jobs)

    # A GPU type (README): the plugin's `gpu_model` resource, set per model rule, gives --gpus=<model>:<gpu>.
    known |= {job["JobID"] for job in jobs}
    target = "results/cache/toy-clip/text_cannot.h5"  # before the options, which all take several values
    run_ok(workdir, EXPORT, RUN_GPU.replace("snakemake ", f"snakemake {target} ", 1)
           + " --forcerun cache_cannot_activations --set-resources cache_cannot_activations:gpu_model=testgpu")
    (typed,) = [job for job in sacct_jobs(workdir) if job["JobID"] not in known]
    assert job_rule(typed) == "cache_cannot_activations" and typed["State"] == "COMPLETED", typed
    assert " --gpus=testgpu:1 " in typed["SubmitLine"], typed


def test_unset_account_and_partition_fall_back_to_the_cluster_defaults(slurm, tmp_path):
    workdir = workflow_copy(tmp_path / "wf")
    out = run_ok(workdir, "snakemake --profile profiles/slurm results/synthetic/existence.json")
    assert "No SLURM account given" in out
    (job,) = sacct_jobs(workdir)
    assert job["Partition"] == DEFAULT_PARTITION and job["Account"] in (DEFAULT_ACCOUNT, ACCOUNT), job


@pytest.mark.parametrize("setting, message", [
    ("SBATCH_ACCOUNT=nosuch", "The given account nosuch appears to be invalid"),
    ("SBATCH_PARTITION=nosuch", "invalid partition specified: nosuch"),
])
def test_a_wrong_account_or_partition_stops_with_a_clear_message(slurm, tmp_path, setting, message):
    workdir = workflow_copy(tmp_path / "wf")
    code, out = finish(bash(workdir, f"export {setting}",
                            "snakemake --profile profiles/slurm results/synthetic/existence.json"))
    assert code != 0 and message in out, out[-6000:]
    assert not [job for job in sacct_jobs(workdir) if job["State"] == "COMPLETED"]
