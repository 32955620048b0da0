"""Documents in and out: PDFs and multi-page TIFFs keep their pages, sizes and resolution; a scanned page is decoded
at its own resolution; bad documents get one line; writing is atomic and streams page by page."""

from __future__ import annotations

import io
import os

import cv2
import img2pdf
import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from helpers import cli, digests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cleandoc import documents
from cleandoc.api import Cleaner
from cleandoc.clean import clean_document
from cleandoc.documents import DocumentWriter, is_document, read_document
from cleandoc.files import Job, plan_jobs
from cleandoc.imageio import image_dpi, read_image, temporary_name
from cleandoc.models import build_model
from cleandoc.noise import corrupt, random_recipe
from cleandoc.options import CleanOptions
from cleandoc.synth import render_page

LIMIT = 10**9


def scan(seed: int, dpi: int = 100, size_mm: tuple[float, float] = (80, 110)) -> np.ndarray:
    """A dirty rendered page, 8-bit."""
    rng = np.random.default_rng(seed)
    clean = render_page(rng, dpi, size_mm)
    return np.rint(corrupt(clean, random_recipe(rng), rng) * 255).astype(np.uint8)


def encoded(page: np.ndarray, kind: str) -> bytes:
    if kind == "jpeg":
        return cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()
    if kind == "png":
        return cv2.imencode(".png", page)[1].tobytes()
    buffer = io.BytesIO()
    image = Image.fromarray(page)
    if kind == "g4":
        image.point(lambda v: 255 if v >= 128 else 0).convert("1").save(buffer, "TIFF", compression="group4")
    elif kind == "cmyk":
        image.convert("CMYK").save(buffer, "JPEG", quality=90)
    elif kind == "palette":
        image.convert("RGB").quantize(64).save(buffer, "PNG")
    elif kind == "rgb":
        image.convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def scanned_pdf(path, pages: list[np.ndarray], dpi: int = 100, kind: str = "jpeg"):
    path.write_bytes(img2pdf.convert([encoded(p, kind) for p in pages],
                                     layout_fun=img2pdf.get_fixed_dpi_layout_fun((dpi, dpi))))
    return path


def pdf_facts(path) -> list[tuple[tuple[float, float], tuple[int, int], list[str]]]:
    """(page size in points, the first image's pixel size, its filters) of every page."""
    document = pdfium.PdfDocument(str(path))
    facts = []
    for index in range(len(document)):
        page = document[index]
        image = next(o for o in page.get_objects() if o.type == 3)
        facts.append((tuple(round(v, 2) for v in page.get_size()), image.get_px_size(), image.get_filters()))
    return facts


@pytest.fixture(scope="module")
def cleaner() -> Cleaner:
    import torch

    torch.manual_seed(0)
    return Cleaner(build_model({"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1}).eval())


@pytest.mark.parametrize("kind", ["jpeg", "png", "g4", "cmyk", "palette", "rgb"])
def test_a_scanned_pdf_page_is_decoded_at_its_own_resolution(tmp_path, kind):
    page = scan(1)
    path = scanned_pdf(tmp_path / "scan.pdf", [page], kind=kind)
    [read] = read_document(path, None, LIMIT)
    assert read.pixels.shape == page.shape and read.dpi == pytest.approx((100, 100), abs=0.01)
    assert read.size_pt == pytest.approx((page.shape[1] * 0.72, page.shape[0] * 0.72), abs=0.01)
    reference = cv2.imdecode(np.frombuffer(encoded(page, kind), np.uint8), cv2.IMREAD_GRAYSCALE)
    if kind in ("png", "g4"):  # lossless and gray: the very samples
        np.testing.assert_array_equal(read.pixels, reference if kind == "png" else np.where(page >= 128, 255, 0))
    else:
        assert np.abs(read.pixels.astype(int) - reference).mean() < 3  # decoded and converted, not resampled


def test_a_pdf_comes_out_with_the_same_pages_sizes_and_pixels(tmp_path, cleaner):
    pages = [scan(seed) for seed in range(3)]
    source = scanned_pdf(tmp_path / "scan.pdf", pages)
    for binary, flate in ((False, "FlateDecode"), (True, "CCITTFaxDecode")):
        out = tmp_path / f"out-{binary}.pdf"
        result = clean_document(Job(source, out, "document"), cleaner, CleanOptions(binarize=binary))
        assert result.status == "cleaned" and result.pages == 3, result.reason
        assert [(size, px) for size, px, _ in pdf_facts(out)] == [(size, px) for size, px, _ in pdf_facts(source)]
        assert all(filters == [flate] for _, _, filters in pdf_facts(out))
    jpeg = clean_document(Job(source, tmp_path / "jpeg.pdf", "document"), cleaner,
                          CleanOptions(jpeg_quality=80))
    assert jpeg.status == "cleaned" and pdf_facts(tmp_path / "jpeg.pdf")[0][2] == ["DCTDecode"]
    [cleaned] = list(read_document(tmp_path / "out-False.pdf", None, LIMIT))[:1]
    [decoded] = list(read_document(source, None, LIMIT))[:1]
    np.testing.assert_array_equal(cleaned.pixels, cleaner.run(decoded.pixels))  # losslessly what the model made


def test_a_rotated_page_keeps_its_shown_size_and_orientation(tmp_path, cleaner):
    page = scan(2)
    source = scanned_pdf(tmp_path / "scan.pdf", [page])
    with pikepdf.open(source, allow_overwriting_input=True) as pdf:
        pdf.pages[0].Rotate = 90
        pdf.save(source)
    [read] = read_document(source, None, LIMIT)
    assert read.pixels.shape == page.shape[::-1]  # as shown: turned a quarter clockwise
    np.testing.assert_array_equal(read.pixels, np.rot90(read_document_native(page, tmp_path), -1))
    out = tmp_path / "out.pdf"
    clean_document(Job(source, out, "document"), cleaner, CleanOptions())
    document = pdfium.PdfDocument(str(out))
    assert document[0].get_size() == pytest.approx(pdfium.PdfDocument(str(source))[0].get_size())
    assert document[0].get_rotation() == 0


def read_document_native(page: np.ndarray, tmp_path) -> np.ndarray:
    [read] = read_document(scanned_pdf(tmp_path / "upright.pdf", [page]), None, LIMIT)
    return read.pixels


def test_masked_and_vector_pages_are_rendered(tmp_path):
    page = scan(3)
    pdf = pikepdf.new()
    image = pikepdf.Stream(pdf, page.tobytes(), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                           Width=page.shape[1], Height=page.shape[0], ColorSpace=pikepdf.Name.DeviceGray,
                           BitsPerComponent=8)
    mask = np.zeros_like(page)
    mask[:, : page.shape[1] // 2] = 255  # the right half is masked away: paper
    image.SMask = pikepdf.Stream(pdf, mask.tobytes(), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                                 Width=page.shape[1], Height=page.shape[0], ColorSpace=pikepdf.Name.DeviceGray,
                                 BitsPerComponent=8)
    width, height = page.shape[1] * 0.72, page.shape[0] * 0.72
    masked = pdf.add_blank_page(page_size=(width, height))
    masked.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
    masked.Contents = pdf.make_stream(f"q {width} 0 0 {height} 0 0 cm /Im0 Do Q".encode())
    vector = pdf.add_blank_page(page_size=(144, 72))
    vector.Contents = pdf.make_stream(b"0 g 20 20 100 30 re f")
    pdf.save(tmp_path / "mixed.pdf")
    first, second = read_document(tmp_path / "mixed.pdf", None, LIMIT)
    assert first.dpi == pytest.approx((100, 100), abs=0.5)  # rendered at the image's resolution
    assert first.pixels[:, -20:].min() > 250 and first.pixels[:, :20].mean() < 250
    assert second.pixels.shape == (300, 600) and second.dpi == (300, 300)  # no image: 300 dpi
    assert second.pixels[100:150, 150:450].max() < 10  # the black rectangle
    [again] = list(read_document(tmp_path / "mixed.pdf", 150, LIMIT))[1:]
    assert again.pixels.shape == (150, 300)


def bad_document(tmp_path, kind: str):
    path = tmp_path / f"{kind}.pdf"
    good = scanned_pdf(tmp_path / "good.pdf", [scan(4)])
    if kind == "encrypted":
        with pikepdf.open(good) as pdf:
            pdf.save(path, encryption=pikepdf.Encryption(owner="owner", user="secret"))
    elif kind == "damaged":
        path.write_bytes(b"%PDF-1.7\n" + os.urandom(300))
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:200])
    elif kind == "empty":
        with pikepdf.new() as pdf:
            pdf.save(path)
    elif kind == "undecodable":
        with pikepdf.open(good) as pdf:
            image = next(iter(pdf.pages[0].get_images().values()))
            image.write(b"not a jpeg at all" * 20, filter=pikepdf.Name.DCTDecode)
            pdf.save(path)
    return path


@pytest.mark.parametrize(("kind", "reason"), [("encrypted", "encrypted"), ("damaged", "damaged"),
                                              ("truncated", "damaged"), ("empty", "no pages"),
                                              ("undecodable", "damaged")])
def test_a_bad_document_gets_one_line_and_leaves_nothing(tmp_path, cleaner, kind, reason):
    path = bad_document(tmp_path, kind)
    out = tmp_path / "out" / "doc.pdf"
    result = clean_document(Job(path, out, "document"), cleaner, CleanOptions())
    assert result.status == "failed" and reason in result.reason and "\n" not in result.reason
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []


def test_a_page_over_the_pixel_limit_is_refused_before_it_is_decoded(tmp_path, cleaner):
    path = scanned_pdf(tmp_path / "scan.pdf", [scan(5)])
    result = clean_document(Job(path, tmp_path / "o.pdf", "document"), cleaner, CleanOptions(max_pixels=1000))
    assert result.status == "failed" and "over the 0 MP limit" in result.reason and "page 1" in result.reason
    rendered = clean_document(Job(path, tmp_path / "r.pdf", "document"), cleaner,
                              CleanOptions(max_pixels=10**6, dpi=4000))
    assert rendered.status == "failed" and "at 4000 dpi" in rendered.reason


def test_a_multi_page_tiff_comes_out_as_one_with_its_resolution(tmp_path, cleaner):
    frames = [Image.fromarray(scan(seed)) for seed in range(3)]
    source = tmp_path / "scan.tif"
    frames[0].save(source, save_all=True, append_images=frames[1:], dpi=(100, 100), compression="tiff_lzw")
    assert is_document(source) and not is_document(tmp_path / "x.png")
    for binary, compression in ((False, "tiff_adobe_deflate"), (True, "group4")):
        out = tmp_path / f"out-{binary}.tif"
        result = clean_document(Job(source, out, "document"), cleaner, CleanOptions(binarize=binary))
        assert result.status == "cleaned" and result.pages == 3
        with Image.open(out) as written:
            assert written.n_frames == 3
            for index in range(3):
                written.seek(index)
                assert written.size == frames[index].size and written.info["dpi"] == pytest.approx((100, 100))
                assert written.info["compression"] == compression


def test_split_writes_one_image_per_page_with_its_dpi_and_a_rerun_skips_them(tmp_path, cleaner):
    source = scanned_pdf(tmp_path / "scan.pdf", [scan(seed) for seed in range(2)])
    [job] = plan_jobs([str(source)], tmp_path / "out", ".png", split=True).jobs
    assert job.kind == "split"
    assert clean_document(job, cleaner, CleanOptions()).pages == 2
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["scan-0001.png", "scan-0002.png"]
    _, dpi = read_image(tmp_path / "out" / "scan-0001.png")
    assert dpi == pytest.approx((100, 100), abs=0.1)
    (tmp_path / "out" / "scan-0002.png").unlink()
    before = (tmp_path / "out" / "scan-0001.png").stat().st_mtime_ns
    assert clean_document(job, cleaner, CleanOptions()).pages == 1  # only the missing page
    assert (tmp_path / "out" / "scan-0001.png").stat().st_mtime_ns == before


def test_plan_keeps_a_documents_kind(tmp_path):
    pdf = scanned_pdf(tmp_path / "in" / "a.pdf" if (tmp_path / "in").mkdir() is None else None, [scan(6)])
    Image.fromarray(scan(7)).save(tmp_path / "in" / "b.tif", save_all=True, append_images=[Image.fromarray(scan(8))])
    Image.fromarray(scan(9)).save(tmp_path / "in" / "c.tif")
    jobs = {job.source.name: job for job in plan_jobs([str(tmp_path / "in")], tmp_path / "out").jobs}
    assert (jobs["a.pdf"].output.name, jobs["a.pdf"].kind) == ("a.pdf", "document")
    assert (jobs["b.tif"].output.name, jobs["b.tif"].kind) == ("b.tif", "document")
    assert (jobs["c.tif"].output.name, jobs["c.tif"].kind) == ("c.png", "page")
    assert pdf.exists()


def test_a_document_is_complete_or_absent_when_cleaning_stops(tmp_path, cleaner, monkeypatch):
    source = scanned_pdf(tmp_path / "scan.pdf", [scan(seed) for seed in range(3)])
    out = tmp_path / "out" / "scan.pdf"
    real_add, added = DocumentWriter.add, []

    def killed_on_the_second_page(self, cleaned, page):
        if added:
            raise KeyboardInterrupt
        added.append(1)
        real_add(self, cleaned, page)

    monkeypatch.setattr(DocumentWriter, "add", killed_on_the_second_page)
    with pytest.raises(KeyboardInterrupt):
        clean_document(Job(source, out, "document"), cleaner, CleanOptions())
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []  # no document, no page folder
    monkeypatch.undo()
    assert clean_document(Job(source, out, "document"), cleaner, CleanOptions()).pages == 3


def test_pages_stream_one_at_a_time(tmp_path, cleaner, monkeypatch):
    source = scanned_pdf(tmp_path / "scan.pdf", [scan(seed) for seed in range(4)])
    events = []
    real_read, real_run = documents.read_document, Cleaner.run

    def reading(*args):
        for page in real_read(*args):
            events.append("read")
            yield page

    monkeypatch.setattr("cleandoc.clean.read_document", reading)
    monkeypatch.setattr(Cleaner, "run", lambda self, *a, **k: events.append("clean") or real_run(self, *a, **k))
    clean_document(Job(source, tmp_path / "o.pdf", "document"), cleaner, CleanOptions())
    assert events == ["read", "clean"] * 4  # never a second page decoded before the first is cleaned


def test_a_killed_writers_page_folder_is_removed_by_the_next_run(tmp_path, cleaner):
    from cleandoc.imageio import remove_stale_temporaries

    stale = temporary_name(tmp_path / "scan.pdf")
    stale = stale.with_name(stale.name.replace(f".{os.getpid()}.", ".999999."))
    stale.mkdir()
    (stale / "000001.pdf").write_bytes(b"%PDF")
    assert remove_stale_temporaries(tmp_path) == 1 and not stale.exists()


def test_clean_command_reads_and_writes_documents(tmp_path, tiny_model_path):
    source = scanned_pdf(tmp_path / "in" / "scan.pdf" if (tmp_path / "in").mkdir() is None else None,
                         [scan(seed) for seed in range(2)])
    (tmp_path / "in" / "broken.pdf").write_bytes(b"%PDF-1.4 nothing more")
    before = digests(tmp_path / "in")
    result = cli("clean", tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_model_path, "--device", "cpu")
    assert result.exit_code == 1
    assert "scan.pdf -> " in result.stderr and "(2 pages," in result.stderr
    assert f"{tmp_path / 'in' / 'broken.pdf'}: damaged or not a PDF" in result.stderr
    assert "Traceback" not in result.output and digests(tmp_path / "in") == before
    assert len(pdf_facts(tmp_path / "out" / "scan.pdf")) == 2
    single = cli("clean", source, "-o", tmp_path / "one.pdf", "--model", tiny_model_path, "--binarize")
    assert single.exit_code == 0 and pdf_facts(tmp_path / "one.pdf")[0][2] == ["CCITTFaxDecode"]
    wrong = cli("clean", source, "-o", tmp_path / "one.png", "--model", tiny_model_path)
    assert wrong.exit_code == 2 and "document" in wrong.stderr
    split = cli("clean", source, "-o", tmp_path / "pages", "--model", tiny_model_path, "--split", "--format", "tif")
    assert split.exit_code == 0 and sorted(p.name for p in (tmp_path / "pages").iterdir()) == [
        "scan-0001.tif", "scan-0002.tif"]


def test_pages_and_documents_mixed_in_one_folder_with_several_workers(tmp_path, cleaner):
    """A document waits in the read-ahead queue among pages without a decode of its own: the pipeline's memory
    count and its Ctrl-C path must take it as holding nothing."""
    from cleandoc.clean import clean_pages

    (tmp_path / "in").mkdir()
    Image.fromarray(scan(1)).save(tmp_path / "in" / "a.png")
    for name, seed in (("b.pdf", 2), ("c.pdf", 3)):
        scanned_pdf(tmp_path / "in" / name, [scan(seed)])
    Image.fromarray(scan(4)).save(tmp_path / "in" / "d.png")
    jobs = plan_jobs([str(tmp_path / "in")], tmp_path / "out", ".png").jobs
    summary = clean_pages(jobs, cleaner, CleanOptions(workers=4))
    assert [r.status for r in summary.results] == ["cleaned"] * 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.pdf", "c.pdf", "d.png"]


def test_images_keep_their_dpi(tmp_path, tiny_model_path):
    page = scan(10)
    Image.fromarray(page).save(tmp_path / "page.png", dpi=(240, 240))
    Image.fromarray(page).save(tmp_path / "page.jpg", dpi=(200, 200))
    for name, dpi in (("page.png", 240), ("page.jpg", 200)):
        for fmt in ("png", "jpg", "tif"):
            out = tmp_path / f"out-{fmt}"
            assert cli("clean", tmp_path / name, "-o", out, "--model", tiny_model_path, "--format", fmt,
                       "--overwrite").exit_code == 0
            assert image_dpi((out / f"page.{fmt}").read_bytes()) == pytest.approx((dpi, dpi), abs=0.1), (name, fmt)


SEED_PDF = img2pdf.convert(cv2.imencode(".png", np.full((40, 30), 200, np.uint8))[1].tobytes())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_damaged_pdfs_are_refused_in_one_line(tmp_path, cleaner, data):
    blob = bytearray(SEED_PDF)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(blob) - 1))
        if data.draw(st.booleans()):
            blob[position] = data.draw(st.integers(0, 255))
        else:
            del blob[position:position + data.draw(st.integers(1, 64))]
    path = tmp_path / "fuzz.pdf"
    path.write_bytes(bytes(blob))
    out = tmp_path / "fuzz-out.pdf"
    out.unlink(missing_ok=True)
    result = clean_document(Job(path, out, "document"), cleaner, CleanOptions(overwrite=True))
    if result.status == "failed":
        assert result.reason and "\n" not in result.reason and not out.exists()
    else:
        assert len(pdf_facts(out)) >= 1
