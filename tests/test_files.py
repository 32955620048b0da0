from __future__ import annotations

import os
from pathlib import Path

import pytest

from cleandoc.files import Job, file_job, parse_shard, plan_jobs


def touch(*paths: Path) -> None:
    """Dummy pages: only names matter here, the decoder judges content later."""
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really an image")


def pairs(plan) -> list[tuple[Path, Path]]:
    return [(job.source, job.output) for job in plan.jobs]


def test_file_input_is_taken_whatever_its_extension(tmp_path):
    touch(tmp_path / "page.tif", tmp_path / "notes.txt")
    out = tmp_path / "out"
    plan = plan_jobs([str(tmp_path / "page.tif"), str(tmp_path / "notes.txt")], out)
    assert pairs(plan) == [(tmp_path / "notes.txt", out / "notes.png"), (tmp_path / "page.tif", out / "page.png")]
    assert plan.problems == []
    assert plan.total_before_shard == 2


def test_output_extension_replaces_suffix(tmp_path):
    touch(tmp_path / "page.png")
    plan = plan_jobs([str(tmp_path / "page.png")], tmp_path / "out", extension=".tif")
    assert plan.jobs == [Job(tmp_path / "page.png", tmp_path / "out" / "page.tif")]


def test_source_is_kept_as_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "scans" / "page.png")
    plan = plan_jobs(["scans"], Path("out"))
    assert plan.jobs == [Job(Path("scans/page.png"), Path("out/page.png"))]


def test_folder_input_takes_only_images_directly_inside(tmp_path):
    scans = tmp_path / "scans"
    touch(scans / "b.jpg", scans / "a.png", scans / "readme.txt", scans / "sub" / "c.png")
    out = tmp_path / "out"
    plan = plan_jobs([str(scans)], out)
    assert pairs(plan) == [(scans / "a.png", out / "a.png"), (scans / "b.jpg", out / "b.png")]
    assert plan.problems == []


def test_glob_expands_to_files_and_folders(tmp_path):
    touch(tmp_path / "p1.png", tmp_path / "p2.tif", tmp_path / "other.bmp")
    touch(tmp_path / "pages" / "p3.webp")
    out = tmp_path / "out"
    plan = plan_jobs([str(tmp_path / "p*")], out)
    assert pairs(plan) == [
        (tmp_path / "p1.png", out / "p1.png"),
        (tmp_path / "p2.tif", out / "p2.png"),
        (tmp_path / "pages" / "p3.webp", out / "p3.png"),
    ]


def test_existing_path_with_glob_characters_is_not_a_pattern(tmp_path):
    touch(tmp_path / "page[1].png", tmp_path / "page1.png")
    plan = plan_jobs([str(tmp_path / "page[1].png")], tmp_path / "out")
    assert [job.source for job in plan.jobs] == [tmp_path / "page[1].png"]


def test_mixed_inputs_are_sorted_by_output(tmp_path):
    touch(tmp_path / "z.png", tmp_path / "folder" / "m.png", tmp_path / "globbed" / "a.jpeg")
    out = tmp_path / "out"
    plan = plan_jobs([str(tmp_path / "z.png"), str(tmp_path / "folder"), str(tmp_path / "globbed" / "*.jpeg")], out)
    assert [job.output for job in plan.jobs] == [out / "a.png", out / "m.png", out / "z.png"]


def test_recursive_mirrors_the_tree(tmp_path):
    scans = tmp_path / "scans"
    touch(scans / "a" / "page.png", scans / "b" / "page.png", scans / "b" / "deep" / "x.tif", scans / "top.png")
    out = tmp_path / "out"
    plan = plan_jobs([str(scans)], out, recursive=True)
    assert pairs(plan) == [
        (scans / "a" / "page.png", out / "a" / "page.png"),
        (scans / "b" / "deep" / "x.tif", out / "b" / "deep" / "x.png"),
        (scans / "b" / "page.png", out / "b" / "page.png"),
        (scans / "top.png", out / "top.png"),
    ]
    assert plan.problems == []


def test_empty_folder_hints_at_recursive_only_when_it_would_help(tmp_path):
    touch(tmp_path / "nested" / "sub" / "page.png", tmp_path / "flat" / "notes.txt")
    plan = plan_jobs([str(tmp_path / "nested"), str(tmp_path / "flat")], tmp_path / "out")
    assert plan.jobs == []
    assert plan.problems == [
        (str(tmp_path / "nested"), "no images found (use --recursive for subfolders)"),
        (str(tmp_path / "flat"), "no images found"),
    ]
    (tmp_path / "deep" / "empty").mkdir(parents=True)
    plan = plan_jobs([str(tmp_path / "deep")], tmp_path / "out", recursive=True)
    assert plan.problems == [(str(tmp_path / "deep"), "no images found")]


def test_extensions_are_case_insensitive(tmp_path):
    touch(tmp_path / "a.PNG", tmp_path / "b.Jpeg", tmp_path / "c.TIFF", tmp_path / "d.Txt")
    plan = plan_jobs([str(tmp_path)], tmp_path / "out")
    assert [job.source.name for job in plan.jobs] == ["a.PNG", "b.Jpeg", "c.TIFF"]


def test_hidden_files_and_folders_are_skipped(tmp_path):
    touch(tmp_path / ".hidden.png", tmp_path / ".cache" / "page.png", tmp_path / "shown.png")
    plan = plan_jobs([str(tmp_path)], tmp_path / "out", recursive=True)
    assert [job.source.name for job in plan.jobs] == ["shown.png"]


def test_folder_named_like_an_image_is_not_taken(tmp_path):
    (tmp_path / "scans" / "x.png").mkdir(parents=True)
    touch(tmp_path / "scans" / "y.png")
    plan = plan_jobs([str(tmp_path / "scans")], tmp_path / "out")
    assert [job.source.name for job in plan.jobs] == ["y.png"]


def test_symlink_loop_terminates_and_symlinked_files_are_taken(tmp_path):
    scans = tmp_path / "scans"
    touch(scans / "sub" / "page.png", tmp_path / "elsewhere" / "real.png")
    os.symlink(scans, scans / "sub" / "loop")
    os.symlink(tmp_path / "elsewhere" / "real.png", scans / "linked.png")
    out = tmp_path / "out"
    plan = plan_jobs([str(scans)], out, recursive=True)
    assert pairs(plan) == [(scans / "linked.png", out / "linked.png"),
                           (scans / "sub" / "page.png", out / "sub" / "page.png")]


def test_outdir_inside_the_input_folder_is_not_scanned(tmp_path):
    scans = tmp_path / "scans"
    out = scans / "clean"
    touch(scans / "page.png", out / "page.png", out / "sub" / "old.png")
    os.symlink(out / "page.png", scans / "link_into_outdir.png")
    for recursive in (False, True):
        plan = plan_jobs([str(scans)], out, recursive=recursive)
        assert pairs(plan) == [(scans / "page.png", out / "page.png")]
        assert plan.problems == []


def test_folder_inside_outdir_is_still_scanned(tmp_path):
    touch(tmp_path / "scans" / "page.tif")
    plan = plan_jobs([str(tmp_path / "scans")], tmp_path)
    assert pairs(plan) == [(tmp_path / "scans" / "page.tif", tmp_path / "page.png")]


def test_same_file_reached_twice_is_taken_once(tmp_path):
    touch(tmp_path / "scans" / "page.png")
    inputs = [str(tmp_path / "scans" / "page.png"), str(tmp_path / "scans"), str(tmp_path / "scans" / "*.png")]
    plan = plan_jobs(inputs, tmp_path / "out")
    assert len(plan.jobs) == 1
    assert plan.problems == []


def test_output_clash_keeps_the_first_and_reports_the_other(tmp_path):
    touch(tmp_path / "scans" / "page.tif", tmp_path / "scans" / "page.png", tmp_path / "other" / "page.jpg")
    out = tmp_path / "out"
    plan = plan_jobs([str(tmp_path / "scans"), str(tmp_path / "other" / "page.jpg")], out)
    first = tmp_path / "other" / "page.jpg"
    assert pairs(plan) == [(first, out / "page.png")]
    hint = "clean it in a separate run or rename it"
    assert plan.problems == [
        (str(tmp_path / "scans" / "page.png"), f"output name clashes with {first}; {hint}"),
        (str(tmp_path / "scans" / "page.tif"), f"output name clashes with {first}; {hint}"),
    ]


def test_output_never_overwrites_an_input(tmp_path):
    scans = tmp_path / "scans"
    touch(scans / "page.png", tmp_path / "other" / "page.tif", tmp_path / "other" / "fine.tif")
    inputs = [str(scans / "page.png"), str(tmp_path / "other")]
    plan = plan_jobs(inputs, scans)
    assert pairs(plan) == [(tmp_path / "other" / "fine.tif", scans / "fine.png")]
    assert plan.problems == [
        (str(tmp_path / "other" / "page.tif"), f"output would overwrite the input {scans / 'page.png'}"),
        (str(scans / "page.png"), "output would overwrite the input"),
    ]


def test_missing_path_and_empty_glob_are_problems(tmp_path):
    touch(tmp_path / "page.png")
    inputs = [str(tmp_path / "missing.png"), str(tmp_path / "*.jpg"), str(tmp_path / "page.png")]
    plan = plan_jobs(inputs, tmp_path / "out")
    assert len(plan.jobs) == 1
    assert plan.problems == [
        (str(tmp_path / "missing.png"), "no such file or folder"),
        (str(tmp_path / "*.jpg"), "no files match"),
    ]


@pytest.mark.parametrize("count", [1, 5, 7])
def test_shards_partition_the_jobs_deterministically(tmp_path, count):
    touch(*(tmp_path / "scans" / f"page{i:02d}.png" for i in range(count)))
    inputs = [str(tmp_path / "scans"), str(tmp_path / "missing.png")]
    full = plan_jobs(inputs, tmp_path / "out")
    for n in range(1, 6):
        shards = [plan_jobs(inputs, tmp_path / "out", shard=(k, n)) for k in range(1, n + 1)]
        assert shards == [plan_jobs(inputs, tmp_path / "out", shard=(k, n)) for k in range(1, n + 1)]
        taken = [job for plan in shards for job in plan.jobs]
        assert len(taken) == len(set(taken))
        assert sorted(taken, key=lambda job: job.output) == full.jobs
        for plan in shards:
            assert plan.total_before_shard == count
            assert plan.problems == full.problems


def test_plan_rejects_an_impossible_shard(tmp_path):
    with pytest.raises(ValueError, match="got '5/4'"):
        plan_jobs([], tmp_path, shard=(5, 4))


@pytest.mark.parametrize("text, expected", [("1/1", (1, 1)), ("3/4", (3, 4)), (" 2/2 ", (2, 2))])
def test_parse_shard_accepts_k_of_n(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "x", "1/0", "-1/2", "1/", "/4", "1/2/3", ""])
def test_parse_shard_rejects_everything_else(text):
    with pytest.raises(ValueError, match=f"^shard must be K/N with 1 <= K <= N, got {text!r}$"):
        parse_shard(text)


def test_one_file_to_one_named_output_keeps_its_kind(tmp_path):
    from PIL import Image

    page, pdf = tmp_path / "page.png", tmp_path / "scan.pdf"
    Image.new("L", (8, 8), 255).save(page)
    pdf.write_bytes(b"%PDF-1.4\n")  # named a PDF: a document, judged by its extension
    assert file_job(page, tmp_path / "out.jpg") == Job(page, tmp_path / "out.jpg", "page")
    assert file_job(pdf, tmp_path / "out.PDF").kind == "document"
    with pytest.raises(ValueError, match="overwrite the input"):
        file_job(page, page)
    with pytest.raises(ValueError, match=r"scan\.pdf is written as a PDF"):
        file_job(pdf, tmp_path / "out.png")
    with pytest.raises(ValueError, match="written as an image"):
        file_job(page, tmp_path / "out.pdf")
