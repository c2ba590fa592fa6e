import subprocess
import sys

import pytest

from hf_reduce.cli import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "train-cnn" in out


def test_unknown_command(capsys):
    assert main(["trian-cnn"]) == 2
    assert "unknown command 'trian-cnn'" in capsys.readouterr().err


def test_top_level_help_imports_no_torch():
    # Before: `hf-reduce --help` imported torch, transformers and PEFT (5-6 s).
    code = "import sys, hf_reduce_cli; hf_reduce_cli.main(['--help']); assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_anticipated_errors_are_one_short_message_with_exit_2(tmp_path):
    command = [
        "hf-reduce",
        "train-ode",
        "--method",
        "nope",
        "--output_dir",
        str(tmp_path),
        "--max_steps",
        "1",
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hf-reduce")]
    assert lines == [lines[0]] and "unknown solver method 'nope'" in lines[0] and "rk4_uv" in lines[0]
    assert "Traceback" not in proc.stderr
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ValueError" in debug.stderr


def test_console_script_help():
    out = subprocess.run(
        ["hf-reduce", "train-cnn", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--dataset" in out and "--push_to_hub" in out and "--resume_from_checkpoint" in out


def test_train_cnn_end_to_end(tmp_path):
    from hf_reduce.commands.train_cnn import main as train_cnn

    summary = train_cnn(
        [
            "--dataset",
            "digits",
            "--output_dir",
            str(tmp_path),
            "--max_steps",
            "30",
            "--layers",
            "8",
            "M",
            "16",
            "--classifier_hidden_sizes",
            "32",
            "--learning_rate",
            "0.01",
            "--disable_tqdm",
            "--logging_steps",
            "0",
        ]
    )
    assert summary["test_accuracy"] > 0.5  # 30 steps of a tiny CNN: far above the 0.1 of chance
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert (tmp_path / "model" / "README.md").read_text().count("accuracy") >= 2


def test_push_without_repo_id_is_rejected():
    proc = subprocess.run(
        [sys.executable, "-m", "hf_reduce.cli", "train-cnn", "--push_to_hub"], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "--push_to_hub needs --hub_model_id" in proc.stderr


def test_every_command_has_help(capsys):
    import pytest

    from hf_reduce.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "--help" in capsys.readouterr().out or name == "demo"


def test_models_that_do_not_match_their_config_are_refused(tmp_path):
    # Before: a config with an extra layer loaded with random weights and reduce-maxvol published a "reduced"
    # model of it; train-ode --model_name_or_path <a VGG> trained a random ODE net.
    import json

    import pytest

    import hf_reduce
    from hf_reduce.commands.common import load_trained_model

    model = hf_reduce.VGGForImageClassification(
        hf_reduce.VGGConfig(layers=[4, "M", 8], num_channels=1, image_size=8, num_labels=3)
    )
    model.save_pretrained(tmp_path / "vgg")
    with pytest.raises(
        ValueError, match="is a hf_reduce_vgg model; this command needs a hf_reduce_ode model"
    ):
        load_trained_model(
            hf_reduce.ODEForImageClassification, str(tmp_path / "vgg"), expected_type="hf_reduce_ode"
        )
    config = json.loads((tmp_path / "vgg" / "config.json").read_text())
    config["layers"] = [4, "M", 8, 8]
    (tmp_path / "vgg" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"do not match its config: 6 missing keys \(e.g. \['features.2"):
        load_trained_model(hf_reduce.VGGForImageClassification, str(tmp_path / "vgg"))
    proc = subprocess.run(
        ["hf-reduce", "reduce-maxvol", "--model_name_or_path", str(tmp_path / "vgg"), "--output_dir",
         str(tmp_path / "out")], capture_output=True, text=True,
    )  # fmt: skip
    assert (
        proc.returncode == 2 and "do not match its config" in proc.stderr and "Traceback" not in proc.stderr
    )
    assert not (tmp_path / "out" / "model").exists()
    missing = subprocess.run(
        ["hf-reduce", "attack", "--model_name_or_path", "outputs/nothing/model"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no model at outputs/nothing/model; train one with" in missing.stderr


def test_the_default_chain_needs_no_paths_and_overwrites_nothing(tmp_path, monkeypatch):
    # Before: every command wrote outputs/run (reduce-maxvol replaced the CNN it had just read) and the
    # reducing commands read outputs/vgg/model, which no command writes.
    import hashlib

    from hf_reduce.commands import attack, build_asnet, reduce_maxvol, train_cnn

    monkeypatch.chdir(tmp_path)
    quick = ["--disable_tqdm", "true", "--logging_steps", "0"]
    train_cnn.main(["--max_steps", "30", "--layers", "8", "M", "16", "M", "16", "--classifier_hidden_sizes", "32",
                    *quick])  # fmt: skip
    cnn = tmp_path / "outputs" / "train-cnn-digits" / "model" / "model.safetensors"
    digest = hashlib.sha256(cnn.read_bytes()).hexdigest()
    reduce_maxvol.main(["--keep_blocks", "1", "--latency_repeats", "2", "--max_samples", "200", *quick])
    build_asnet.main(["--cut", "1", "--rank", "8", "--latency_repeats", "2", "--max_samples", "200", *quick])
    attack.main(
        ["--fit_samples", "50", "--eval_samples", "50", "--seeds", "0", "--eps", "1.0", "--uap_passes", "1"]
    )
    folders = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert folders == ["attack-digits", "build-asnet-digits", "reduce-maxvol-digits", "train-cnn-digits"], (
        folders
    )
    assert hashlib.sha256(cnn.read_bytes()).hexdigest() == digest  # the trained CNN is untouched
    for folder in folders[1:]:
        assert (tmp_path / "outputs" / folder / "model" / "config.json").exists()
    assert (tmp_path / "outputs" / "attack-digits" / "attack_results.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "bbc-news"], "'bbc-news' is a text dataset; embedded image sources: ['digits']"),
        (["--max_train_samples", "-5"], "max_train_samples must be >= 1 (or left out for all rows), got -5"),
        (["--max_train_samples", "0"], "max_train_samples must be >= 1 (or left out for all rows), got 0"),
        (["--dataset", "data/my/set"], "data source 'data/my/set' does not exist"),
        (["--dataset", "someone/set"], "'someone/set' is no local file or folder, and the Hub is offline"),
        (["--metrics", "acc"], "metrics must be among ['accuracy', 'f1'], got ['acc']"),
        (["--save_total_limit", "0"], "save_total_limit must be >= 1, got 0"),
    ],
)
def test_bad_inputs_are_refused_before_any_work(args, message, tmp_path, capsys, monkeypatch):
    # Before: --metrics acc failed after a full epoch, -5 / 0 samples crashed inside datasets, a text set went
    # to the Hub and failed after ~25 s of retries.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["train-cnn", *args, "--max_steps", "1", "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "model").exists()


@pytest.mark.parametrize(
    "command, groups",
    [
        ("train-cnn", ["data:", "model:", "training:", "Hub:"]),
        ("finetune-lotr", ["data:", "model and adapter:", "training:", "Hub:"]),
        ("attack", ["data:", "model and attacks:", "output:"]),
    ],
)
def test_help_groups_the_arguments_and_shows_defaults(command, groups):
    # Before: one flat list without defaults; image commands offered --text_column and listed bbc-news.
    out = subprocess.run(["hf-reduce", command, "--help"], capture_output=True, text=True, check=True).stdout
    headers = [
        line.rstrip() for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")
    ]
    assert headers[-len(groups) :] == groups, headers
    assert "(default: " in out
    image = command != "finetune-lotr"
    assert ("--text_column" in out) is not image and ("--image_column" in out) is image
    assert ("bbc-news" in out) is not image


def test_importing_hf_reduce_prints_nothing():
    # With the quant extra installed, PEFT's import of torchao and bitsandbytes logged five lines about GPU
    # kernels this machine cannot load; HF_REDUCE_VERBOSE=1 keeps them.
    proc = subprocess.run(
        [sys.executable, "-c", "import hf_reduce"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr


def test_version_is_the_packages_and_needs_no_torch():
    from importlib.metadata import version

    import hf_reduce

    code = "import sys, hf_reduce_cli; hf_reduce_cli.main(['--version']); print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["hf-reduce", hf_reduce.__version__, "False"]
    assert version("hf-reduce") == hf_reduce.__version__
