"""Model files and checkpoints: exact round trips, atomic saves, and one-line refusals of anything else."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import struct

import pytest
import torch
from safetensors.torch import save as save_safetensors_bytes
from safetensors.torch import save_file

from cleandoc import store
from cleandoc.models import build_model
from cleandoc.store import (
    ModelFileError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
    shipped_model_path,
)

CONFIG = {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1}


def tiny(config: dict = CONFIG, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(config).eval()


def read_parts(path: pathlib.Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and raw string metadata of a safetensors file, without going through cleandoc."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8:8 + length]).get("__metadata__", {})
    from safetensors.torch import load
    return load(data), metadata


def rewrite(path: pathlib.Path, target: pathlib.Path, **changes: str) -> None:
    tensors, metadata = read_parts(path)
    metadata.update(changes)
    target.write_bytes(save_safetensors_bytes(tensors, metadata=metadata))


def assert_refused(path, contains: str | None = None, loader=load_model) -> str:
    with pytest.raises(ModelFileError) as caught:
        loader(path)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    assert str(path) in message
    if contains is not None:
        assert contains in message.lower(), message
    return message


@pytest.fixture
def good_file(tmp_path) -> pathlib.Path:
    path = tmp_path / "good.safetensors"
    save_model(tiny(), path, info={"source": "test"})
    return path


def probe() -> torch.Tensor:
    torch.manual_seed(99)
    return torch.rand(2, 1, 16, 24)


# ---------------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("config", [CONFIG, {"arch": "dae", "widths": [8, 16], "convs": 2}])
def test_save_load_round_trip(tmp_path, config):
    model = tiny(config, seed=3)
    info = {"trained_on": "synthetic pages", "epochs": 12,
            "metrics": {"psnr": 31.254789123456789, "loss": [0.1, 0.05, 1e-7, -2.5e300]},
            "nested": {"a": {"b": [1, 2.5, None, True, "x"]}}, "unicode": "été ✓"}
    path = tmp_path / "sub" / "dir" / "m.safetensors"  # parents are created
    save_model(model, path, info=info)
    loaded, about = load_model(path)
    assert loaded.config == about.config == model.config == config
    assert about.provenance == info
    assert about.source == str(path)
    assert not loaded.training
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert restored[key].dtype == original[key].dtype
        assert torch.equal(restored[key], original[key]), key
    with torch.no_grad():
        assert torch.equal(loaded(probe()), model.to(memory_format=torch.channels_last)(probe()))  # loaded so


def test_info_defaults_to_empty_dict(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(tiny(), path)
    assert load_model(path)[1].provenance == {}


def test_save_overwrites(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(tiny(seed=1), path, info={"v": 1})
    save_model(tiny({"arch": "dae", "widths": [8]}, seed=2), path, info={"v": 2})
    loaded, about = load_model(path)
    assert loaded.config["arch"] == "dae" and about.provenance == {"v": 2}


def test_load_default_model():
    path = shipped_model_path("default")
    assert path.is_file()
    model, about = load_model(None)
    assert about.source == str(path)
    assert isinstance(about.provenance, dict)
    assert isinstance(model.config, dict) and model.config["arch"] in ("unet", "dae")
    assert build_model(model.config).config == model.config
    explicit, _ = load_model(path)
    for key, value in model.state_dict().items():
        assert torch.equal(explicit.state_dict()[key], value)
    page = torch.rand(1, 1, 2 * model.size_multiple, 3 * model.size_multiple)
    with torch.no_grad():
        out = model(page)
    assert out.shape == page.shape and ((out >= 0) & (out <= 1)).all()


# ------------------------------------------------------------------------------------------------ atomicity

def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    old = tiny(seed=1)
    save_model(old, path, info={"which": "old"})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        save_model(tiny({"arch": "dae", "widths": [8]}, seed=2), path, info={"which": "new"})
    monkeypatch.undo()

    assert path.read_bytes() == before
    loaded, about = load_model(path)
    assert about.provenance == {"which": "old"}
    for key, value in old.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".cleandoc-tmp")] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_failed_checkpoint_save_leaves_no_temporary(tmp_path, monkeypatch):
    model = tiny()
    opt = torch.optim.AdamW(model.parameters())
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError("simulated")))
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "c.safetensors", model, opt, {"epoch": 1})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------- refusals

class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("name", ["model.pt", "model.safetensors", "model.pth"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, protocol, name):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker), protocol=protocol)
    pickle.loads(payload)  # the payload is live: loading it does create the marker...
    assert marker.exists()
    marker.unlink()
    path = tmp_path / name
    path.write_bytes(payload)
    assert_refused(path)
    assert_refused(path, loader=load_checkpoint)
    assert not marker.exists()  # ...but cleandoc never unpickled it


@pytest.mark.parametrize("zipfile", [True, False])
def test_torch_save_file_is_refused(tmp_path, zipfile):
    path = tmp_path / "weights.pth"
    torch.save(tiny().state_dict(), path, _use_new_zipfile_serialization=zipfile)
    message = assert_refused(path)
    assert "pickle" in message.lower() or "safetensors" in message.lower()


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    assert_refused(path)


@pytest.mark.parametrize("cut", ["4", "8", "100", "half", "minus10", "minus1"])
def test_truncated_model_is_refused(tmp_path, good_file, cut):
    data = good_file.read_bytes()
    keep = {"4": 4, "8": 8, "100": 100, "half": len(data) // 2, "minus10": len(data) - 10,
            "minus1": len(data) - 1}[cut]
    path = tmp_path / f"cut-{cut}.safetensors"
    path.write_bytes(data[:keep])
    assert_refused(path)
    assert_refused(path, loader=load_checkpoint)


def test_garbage_is_refused(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(os.urandom(3000))
    assert_refused(path)


def test_foreign_safetensors_is_refused(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    assert_refused(path, contains="metadata")
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    assert_refused(path, contains="metadata")


def test_unknown_arch_is_refused(tmp_path, good_file):
    path = tmp_path / "arch.safetensors"
    rewrite(good_file, path, config=json.dumps({"arch": "transformer", "widths": [8, 16]}))
    assert_refused(path, contains="transformer")


def test_missing_config_is_refused(tmp_path, good_file):
    path = tmp_path / "noconfig.safetensors"
    tensors, metadata = read_parts(good_file)
    del metadata["config"]
    path.write_bytes(save_safetensors_bytes(tensors, metadata=metadata))
    assert_refused(path, contains="config")
    rewrite(good_file, path, config='"just a string"')
    assert_refused(path, contains="config")


def test_corrupt_metadata_json_is_refused(tmp_path, good_file):
    path = tmp_path / "badjson.safetensors"
    rewrite(good_file, path, info="{not json")
    assert_refused(path)


@pytest.mark.parametrize("config", [
    {"arch": "unet", "widths": [8, 32], "unshuffle": 2, "convs": 1},   # different widths
    {"arch": "unet", "widths": [8, 16, 32], "unshuffle": 2, "convs": 1},  # an extra level
    {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 2},   # more convs per block
    {"arch": "dae", "widths": [8, 16]},                                 # another architecture
], ids=["widths", "levels", "convs", "arch"])
def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, good_file, config):
    path = tmp_path / "misfit.safetensors"
    rewrite(good_file, path, config=json.dumps(config))
    assert_refused(path, contains="do not fit")


def test_missing_tensor_is_refused(tmp_path, good_file):
    tensors, metadata = read_parts(good_file)
    tensors.pop(sorted(tensors)[0])
    path = tmp_path / "missing.safetensors"
    path.write_bytes(save_safetensors_bytes(tensors, metadata=metadata))
    assert_refused(path, contains="do not fit")


@pytest.mark.parametrize("version", ["2", "99"])
def test_newer_format_is_refused(tmp_path, good_file, version):
    path = tmp_path / "future.safetensors"
    rewrite(good_file, path, format_version=version)
    assert_refused(path, contains="newer")


@pytest.mark.parametrize("version", ["", "one", "1.5"])
def test_unreadable_format_version_is_refused(tmp_path, good_file, version):
    path = tmp_path / "version.safetensors"
    rewrite(good_file, path, format_version=version)
    assert_refused(path, contains="version")


def test_folder_is_refused(tmp_path):
    folder = tmp_path / "a-folder.safetensors"
    folder.mkdir()
    assert_refused(folder, contains="folder")
    assert_refused(folder, loader=load_checkpoint)


def test_missing_file_is_refused(tmp_path):
    path = tmp_path / "nope.safetensors"
    assert_refused(path, contains="no such")
    assert_refused(path, loader=load_checkpoint)


def test_missing_default_model_says_so(monkeypatch, tmp_path):
    missing = tmp_path / "gone" / "default.safetensors"
    monkeypatch.setattr(store, "shipped_model_path", lambda name: missing)
    with pytest.raises(ModelFileError, match="shipped"):
        load_model(None)
    with pytest.raises(ModelFileError, match="shipped"):
        load_model("default")


def test_shipped_models_by_name_and_a_file_called_like_one(tmp_path, monkeypatch):
    """`--model default` is the shipped model; a file of that name is reached as ./default."""
    assert load_model("default")[1].source == str(shipped_model_path("default")) == load_model()[1].source
    monkeypatch.chdir(tmp_path)
    save_model(tiny(seed=3), tmp_path / "default")
    assert load_model("./default")[1].config == tiny(seed=3).config
    assert load_model("default")[1].source == str(shipped_model_path("default"))


# Files crafted by hand (not by safetensors), as a corrupt download or a hostile file could be: every one must be
# a ModelFileError, never another exception escaping from the loader.
def _raw(header) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text


@pytest.mark.parametrize("name", ["metadata-is-a-list", "metadata-is-a-string"])
def test_non_dict_metadata_is_refused(tmp_path, name):
    metadata = {"metadata-is-a-list": ["cleandoc-model"], "metadata-is-a-string": "cleandoc-model"}[name]
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(_raw({"__metadata__": metadata}))
    assert_refused(path)


@pytest.mark.parametrize("header", [[1, 2], "text", 3, None], ids=["list", "string", "number", "null"])
def test_non_dict_header_is_refused(tmp_path, header):
    path = tmp_path / "header.safetensors"
    path.write_bytes(_raw(header))
    assert_refused(path)


@pytest.mark.parametrize("config", [
    {"arch": "unet", "widths": [-3]},
    {"arch": ["unet"]},
], ids=["negative-width", "arch-is-a-list"])
def test_malformed_config_values_are_refused(tmp_path, good_file, config):
    path = tmp_path / "malformed.safetensors"
    rewrite(good_file, path, config=json.dumps(config))
    assert_refused(path)


# ------------------------------------------------------------------------------------------------ checkpoints

def _batch():
    torch.manual_seed(42)
    x = torch.rand(2, 1, 16, 16)
    return x, (x > 0.5).float()


def _step(model, optimizer, x, y):
    optimizer.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(x), y)
    loss.backward()
    optimizer.step()


def test_checkpoint_round_trip_resumes_exactly(tmp_path):
    model = tiny(seed=5).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.8, 0.95), weight_decay=0.02)
    x, y = _batch()
    _step(model, optimizer, x, y)
    _step(model, optimizer, x * 0.5, y)
    state = {"epoch": 3, "step": 7, "history": [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}],
             "best": 0.125, "rng": None}
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, model, optimizer, state, info={"note": "resume me"})

    restored, opt_state, restored_state = load_checkpoint(path)
    assert restored_state == state
    assert restored.config == model.config
    assert load_model(path)[1].provenance == {"note": "resume me"}
    assert restored.training
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key

    fresh = torch.optim.AdamW(restored.parameters(), lr=1.0)  # wrong settings, to be overwritten by the state
    fresh.load_state_dict(opt_state)
    assert fresh.param_groups[0]["lr"] == pytest.approx(3e-3)
    assert tuple(fresh.param_groups[0]["betas"]) == (0.8, 0.95)
    original_state = optimizer.state_dict()["state"]
    loaded_state = fresh.state_dict()["state"]
    assert original_state.keys() == loaded_state.keys()
    for index, slots in original_state.items():
        assert slots.keys() == loaded_state[index].keys()
        for name, value in slots.items():
            assert torch.equal(torch.as_tensor(loaded_state[index][name]), torch.as_tensor(value)), (index, name)

    # One more step each, on the same data: the resumed run takes exactly the step the original would.
    _step(model, optimizer, x, y)
    _step(restored, fresh, x, y)
    for (name, a), b in zip(model.named_parameters(), restored.parameters()):
        assert torch.equal(a, b), name
    # ...and that step did move the weights (it is not a no-op comparison).
    reloaded, _, _ = load_checkpoint(path)
    assert any(not torch.equal(a, b) for a, b in zip(reloaded.parameters(), restored.parameters()))


def test_checkpoint_without_optimizer_state_yet(tmp_path):
    model = tiny(seed=6)
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, model, optimizer, {"epoch": 0})
    restored, opt_state, state = load_checkpoint(path)
    assert state == {"epoch": 0}
    fresh = torch.optim.AdamW(restored.parameters())
    fresh.load_state_dict(opt_state)
    assert fresh.state_dict()["state"] == {}


def test_checkpoint_loads_as_a_plain_model(tmp_path):
    model = tiny(seed=7)
    optimizer = torch.optim.AdamW(model.parameters())
    x, y = _batch()
    _step(model, optimizer, x, y)
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, model, optimizer, {"epoch": 1}, info={"k": [1.5]})
    loaded, about = load_model(path)
    assert not loaded.training and about.provenance == {"k": [1.5]}
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(probe()), model.to(memory_format=torch.channels_last)(probe()))  # loaded so


def test_load_checkpoint_refuses_a_plain_model(good_file):
    assert_refused(good_file, contains="not a training checkpoint", loader=load_checkpoint)


@pytest.mark.parametrize("first_bytes", [b"\x80", b"PK"])
def test_a_model_whose_header_length_looks_like_a_pickle_signature_still_loads(tmp_path, first_bytes):
    """The header length is little-endian: its first bytes can be 0x80 or 'PK' in a perfectly good file."""
    import struct

    path = tmp_path / "model.safetensors"
    modulus = 256 ** len(first_bytes)
    target = int.from_bytes(first_bytes, "little")

    def header_length(padding: int) -> int:
        save_model(tiny(), path, {"padding": "x" * padding})
        return struct.unpack("<Q", path.read_bytes()[:8])[0]

    start = (target - header_length(0)) % modulus
    for padding in range(max(0, start - 8), start + 9):  # the header is padded to a multiple of 8
        if header_length(padding) % modulus == target:
            break
    assert path.read_bytes()[:len(first_bytes)] == first_bytes
    assert load_model(path)[1].config == CONFIG
