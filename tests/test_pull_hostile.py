"""`modelcar pull` / `verify` / `inspect` against hostile images built by hand as `oci:` layouts
(no registry): the security review's proofs of concept, each turned into a regression test."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from modelcar import readback
from modelcar.errors import ModelcarError
from modelcar.oci.image import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, Blob, Descriptor
from modelcar.oci.layout import Layout
from modelcar.oci.pull import HostileEntry, Mismatch
from modelcar.oci.reader import ImageReader, ImageReadError
from modelcar.oci.store import ClientOptions, LayoutStore

from .helpers.common import run_cli

GOOD, EVIL = b"GOOD-weights\n", b"EVIL-weights\n"
DIRECTORY = {"olot.layer.content.type": "directory", "olot.layer.content.inlayerpath": "/models"}
OPTIONS = ClientOptions()


def layer(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def file_layer(path: str, data: bytes, annotated: bytes | None = None) -> dict[str, str]:
    """olot's annotations of a `file` layer holding /models/`path` (its digest: of `annotated`)."""
    return {
        "olot.layer.content.type": "file",
        "olot.layer.content.inlayerpath": "/models/" + path,
        "olot.layer.content.name": path.rsplit("/", 1)[-1],
        "olot.layer.content.digest": "sha256:"
        + hashlib.sha256(annotated if annotated is not None else data).hexdigest(),
        "io.modelcar.layer.content.size": str(len(annotated if annotated is not None else data)),
        "org.opencontainers.image.title": path,
    }


def _manifest(
    layout: Layout,
    layers: list[tuple[bytes, dict[str, str]]],
    arch: str = "amd64",
    history: list[str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Blob:
    descriptors = []
    diff_ids = []
    for data, layer_annotations in layers:
        media_type = OCI_LAYER + ("+gzip" if data[:2] == b"\x1f\x8b" else "")
        descriptors.append(Descriptor(media_type, layout.write_blob(data), len(data), layer_annotations))
        plain = (
            gzip.decompress(data) if data[:2] == b"\x1f\x8b" else bz2.decompress(data) if data[:3] == b"BZh" else data
        )
        diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
    config = Blob.of(
        OCI_CONFIG,
        {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": h} for h in history or ["hand-made"] * len(descriptors)],
        },
    )
    layout.write_blob(config.data)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor.to_json(),
        "layers": [d.to_json() for d in descriptors],
        **({"annotations": annotations} if annotations else {}),
    }
    manifest = Blob.of(OCI_MANIFEST, doc)
    layout.write_blob(manifest.data)
    return manifest


def hand_made(
    where: Path,
    layers: list[tuple[bytes, dict[str, str]]],
    tag: str = "latest",
    history: list[str] | None = None,
    annotations: dict[str, str] | None = None,
) -> str:
    """A layout holding one image of `layers` (bytes, annotations), no base; returns oci:DIR:TAG."""
    layout = Layout(where)
    layout.init()
    manifest = _manifest(layout, layers, history=history, annotations=annotations)
    layout.tag(manifest.descriptor, tag)
    return f"oci:{where}:{tag}"


def ref(text: str):
    return readback.parse_ref(text)


def pull(image: str, dest: Path):
    return readback.pull_image(ref(image), OPTIONS, dest)


def verify(image: str, **kwargs: object) -> list[str]:
    return readback.verify(ref(image), OPTIONS, kwargs.get("public_key"), kwargs.get("local_model"))  # type: ignore[arg-type]


def listing(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = "-> " + os.readlink(path) if path.is_symlink() else "<dir>" if path.is_dir() else path.read_text()
    return out


# ---- S1, S2: nothing is written outside DIR, whatever links the image or DIR hold ----------------


def test_a_second_pull_writes_nothing_outside_dir_through_links_the_first_left(tmp_path: Path) -> None:
    data = layer(
        [
            entry("models/", tarfile.DIRTYPE),
            entry("models/y", data=b"PWNED\n"),
            entry("models/decoy", tarfile.SYMTYPE, link="h/.."),
            entry("models/h", tarfile.SYMTYPE, link="."),
            entry("models/y.modelcar-partial", tarfile.SYMTYPE, link="h/../victim"),
        ]
    )
    image = hand_made(tmp_path / "layout", [(data, DIRECTORY)])
    dest = tmp_path / "out" / "models"
    for _ in range(2):
        with pytest.raises(HostileEntry, match=r"y\.modelcar-partial"):
            pull(image, dest)
        assert not (tmp_path / "out" / "victim").exists()
        assert not [p for p in dest.rglob("*") if p.is_symlink()]


def test_a_chain_of_links_leading_out_is_refused_before_any_link_is_made(tmp_path: Path) -> None:
    data = layer(
        [
            entry("models/", tarfile.DIRTYPE),
            entry("models/a", tarfile.SYMTYPE, link="here"),  # fine, and made first were links made one by one
            entry("models/here", tarfile.SYMTYPE, link="."),
            entry("models/decoy", tarfile.SYMTYPE, link="h/.."),
            entry("models/h", tarfile.SYMTYPE, link="."),
        ]
    )
    dest = tmp_path / "out"
    with pytest.raises(HostileEntry, match="/models/decoy"):
        pull(hand_made(tmp_path / "layout", [(data, DIRECTORY)]), dest)
    assert not [p for p in dest.rglob("*") if p.is_symlink()]


def test_links_left_in_dir_are_never_written_through(tmp_path: Path) -> None:
    """DIR as an older pull (or anyone) left it: a link at a file's name, a link leading out, a
    directory that is a link leading out. The files land as regular files; nothing lands outside."""
    dest, outside = tmp_path / "out", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    os.symlink("../victim", dest / "y")
    os.symlink("../victim", dest / "escape")
    image = hand_made(tmp_path / "layout", [(layer([entry("models/y", data=GOOD)]), file_layer("y", GOOD))])
    with pytest.raises(HostileEntry, match=r"/models/escape .*leads outside"):
        pull(image, dest)  # y itself is written (a regular file), the link leading out is removed
    assert (dest / "y").read_bytes() == GOOD and not (dest / "y").is_symlink()
    assert not (tmp_path / "victim").exists() and not (dest / "escape").is_symlink()
    assert pull(image, dest).reused == ["y"]

    os.symlink("../outside", dest / "sub")
    through = hand_made(
        tmp_path / "layout2", [(layer([entry("models/sub/w.json", data=b"{}")]), file_layer("sub/w.json", b"{}"))]
    )
    with pytest.raises(HostileEntry, match="/models/sub in the target directory is a link"):
        pull(through, dest)
    assert list(outside.iterdir()) == []


def test_what_an_interrupted_pull_left_is_removed(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    (dest / "sub").mkdir(parents=True)
    (dest / "sub" / ".w.bin.0123456789abcdef.modelcar-partial").write_bytes(b"half a file")
    os.symlink("../../victim", dest / "sub" / "w.bin.modelcar-partial")  # an older pull's name
    (dest / "keep.txt").write_text("the user's")
    image = hand_made(
        tmp_path / "layout", [(layer([entry("models/sub/w.bin", data=GOOD)]), file_layer("sub/w.bin", GOOD))]
    )
    assert pull(image, dest).files == ["sub/w.bin"]
    assert listing(dest) == {"keep.txt": "the user's", "sub": "<dir>", "sub/w.bin": GOOD.decode()}
    assert not (tmp_path / "victim").exists()


def test_links_skipped_as_already_there_are_checked_again(tmp_path: Path) -> None:
    a = layer(
        [
            entry("models/", tarfile.DIRTYPE),
            entry("models/real/e/", tarfile.DIRTYPE),
            entry("models/d", tarfile.SYMTYPE, link="real"),
            entry("models/x", tarfile.SYMTYPE, link="d/e/.."),
        ]
    )
    b = layer(
        [
            entry("models/", tarfile.DIRTYPE),
            entry("models/x", tarfile.SYMTYPE, link="d/e/.."),
            entry("models/d", tarfile.SYMTYPE, link="here"),
            entry("models/here", tarfile.SYMTYPE, link="."),
            entry("models/e", tarfile.SYMTYPE, link="."),
        ]
    )
    dest = tmp_path / "out" / "models"
    assert sorted(pull(hand_made(tmp_path / "A", [(a, DIRECTORY)]), dest).links) == ["d", "x"]
    with pytest.raises(HostileEntry, match="/models/x"):
        pull(hand_made(tmp_path / "B", [(b, DIRECTORY)]), dest)
    assert dest.resolve() in (dest / "x").resolve().parents


def test_links_in_dir_that_lead_out_with_the_image_links_undo_them(tmp_path: Path) -> None:
    """Each link alone, and the image's links in the image's tree, stay inside; with links DIR
    already held they lead out: the check on disk catches it and removes what this pull made."""
    dest = tmp_path / "out"
    dest.mkdir()
    os.symlink("here", dest / "d")
    os.symlink(".", dest / "here")
    os.symlink(".", dest / "e")
    data = layer([entry("models/", tarfile.DIRTYPE), entry("models/x", tarfile.SYMTYPE, link="d/e/..")])
    with pytest.raises(HostileEntry, match="/models/x"):
        pull(hand_made(tmp_path / "layout", [(data, DIRECTORY)]), dest)
    assert not (dest / "x").is_symlink()


def test_a_pull_resumes_and_a_second_one_keeps_the_links(tmp_path: Path) -> None:
    files = [
        (layer([entry("models/config.json", data=b"{}")]), file_layer("config.json", b"{}")),
        (
            layer([entry("models/sub/", tarfile.DIRTYPE), entry("models/sub/w.bin", data=GOOD)]),
            file_layer("sub/w.bin", GOOD),
        ),
        (
            layer(
                [
                    entry("models/", tarfile.DIRTYPE),
                    entry("models/alias.json", tarfile.SYMTYPE, link="config.json"),
                    entry("models/latest", tarfile.SYMTYPE, link="sub"),
                    entry("models/copy.bin", tarfile.LNKTYPE, link="models/sub/w.bin"),
                ]
            ),
            {},
        ),
    ]
    # the links layer has no olot annotation: a model layer by its history entry
    history = ["modelcar: /models config.json", "modelcar: /models sub/w.bin", "modelcar: /models links"]
    image = hand_made(tmp_path / "layout", files, history=history)
    dest = tmp_path / "out"
    first = pull(image, dest)
    assert sorted(first.files) == ["config.json", "copy.bin", "sub/w.bin"]
    assert sorted(first.links) == ["alias.json", "latest"]
    again = pull(image, dest)
    assert sorted(again.reused) == ["config.json", "sub/w.bin"] and again.links == []
    assert listing(dest) == {
        "alias.json": "-> config.json",
        "config.json": "{}",
        "copy.bin": GOOD.decode(),
        "latest": "-> sub",
        "sub": "<dir>",
        "sub/w.bin": GOOD.decode(),
    }
    assert verify(image, local_model=dest)


def _top(where: Path) -> str:
    return str(json.loads((where / "index.json").read_text())["manifests"][0]["digest"])


def _blob(where: Path, digest: str) -> bytes:
    return (where / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


# ---- S4: a file's content is its annotation's -------------------------------------------------------


def test_a_hard_link_at_the_next_files_temporary_name_is_refused(tmp_path: Path) -> None:
    image = hand_made(
        tmp_path / "layout",
        [
            (
                layer(
                    [
                        entry("models/", tarfile.DIRTYPE),
                        entry("models/z.safetensors", data=GOOD),
                        entry("models/y.json.modelcar-partial", tarfile.LNKTYPE, link="models/z.safetensors"),
                    ]
                ),
                DIRECTORY,
            ),
            (layer([entry("models/y.json", data=EVIL)]), file_layer("y.json", EVIL)),
        ],
    )
    with pytest.raises(HostileEntry, match=r"y\.json\.modelcar-partial"):
        verify(image)
    with pytest.raises(HostileEntry, match=r"y\.json\.modelcar-partial"):
        pull(image, tmp_path / "out")
    assert not (tmp_path / "out" / "z.safetensors").exists()


def test_a_hard_link_never_lets_a_later_file_write_into_another(tmp_path: Path) -> None:
    """A directory layer links y.json to z's inode; the file layer of y.json replaces the name,
    never writes into the inode: z keeps its checked bytes."""
    image = hand_made(
        tmp_path / "layout",
        [
            (layer([entry("models/z.safetensors", data=GOOD)]), file_layer("z.safetensors", GOOD)),
            (
                layer(
                    [
                        entry("models/", tarfile.DIRTYPE),
                        entry("models/y.json", tarfile.LNKTYPE, link="models/z.safetensors"),
                    ]
                ),
                DIRECTORY,
            ),
            (layer([entry("models/y.json", data=EVIL)]), file_layer("y.json", EVIL)),
        ],
    )
    with pytest.raises(HostileEntry, match="given twice"):
        verify(image)
    with pytest.raises(HostileEntry, match="given twice"):
        pull(image, tmp_path / "out")
    assert (tmp_path / "out" / "z.safetensors").read_bytes() == GOOD


def test_a_file_layer_holds_only_its_file(tmp_path: Path) -> None:
    image = hand_made(
        tmp_path / "layout",
        [
            (layer([entry("models/a.safetensors", data=GOOD)]), file_layer("a.safetensors", GOOD)),
            (
                layer([entry("models/b.json", data=b"{}"), entry("models/a.safetensors", data=EVIL)]),
                file_layer("b.json", b"{}"),
            ),
        ],
    )
    with pytest.raises(HostileEntry, match=r"'models/a.safetensors'.*may hold only that file"):
        verify(image)
    with pytest.raises(HostileEntry, match="may hold only that file"):
        pull(image, tmp_path / "out")
    assert (tmp_path / "out" / "a.safetensors").read_bytes() == GOOD
    assert not (tmp_path / "out" / "b.json").exists()


@pytest.mark.parametrize(
    "member",
    [
        entry("models/other.json", data=b"{}"),
        entry("models/alias", tarfile.SYMTYPE, link="a.safetensors"),
        entry("etc/passwd", data=b"root::0:0::/:/bin/sh\n"),
        entry("models/sub/", tarfile.DIRTYPE),
    ],
    ids=["another-file", "a-link", "outside-models", "another-directory"],
)
def test_a_file_layer_refuses_anything_but_its_file_and_parents(tmp_path: Path, member: tuple) -> None:
    data = layer([entry("models/", tarfile.DIRTYPE), entry("models/a.safetensors", data=GOOD), member])
    with pytest.raises(HostileEntry, match="may hold only that file"):
        verify(hand_made(tmp_path / "layout", [(data, file_layer("a.safetensors", GOOD))]))


def test_a_name_colliding_with_the_temporary_one_is_refused(tmp_path: Path) -> None:
    data = layer([entry("models/a.safetensors.modelcar-partial", data=EVIL), entry("models/a.safetensors", data=GOOD)])
    image = hand_made(tmp_path / "layout", [(data, file_layer("a.safetensors", GOOD))])
    with pytest.raises(HostileEntry, match=r"a\.safetensors\.modelcar-partial"):
        verify(image)
    with pytest.raises(HostileEntry, match=r"a\.safetensors\.modelcar-partial"):
        pull(image, tmp_path / "out")
    assert not (tmp_path / "out" / "a.safetensors").exists()


def test_a_file_of_another_size_than_annotated_is_refused(tmp_path: Path) -> None:
    annotations = file_layer("a.safetensors", GOOD) | {"io.modelcar.layer.content.size": "3"}
    image = hand_made(tmp_path / "layout", [(layer([entry("models/a.safetensors", data=GOOD)]), annotations)])
    with pytest.raises(Mismatch, match=r"/models/a.safetensors: the layer holds 13 bytes, its annotation says 3"):
        pull(image, tmp_path / "out")


# ---- S5: a layer above the model layers --------------------------------------------------------


def test_a_non_model_layer_above_the_model_layers_is_refused(tmp_path: Path) -> None:
    image = hand_made(
        tmp_path / "layout",
        [
            (layer([entry("models/a.safetensors", data=GOOD)]), file_layer("a.safetensors", GOOD)),
            (layer([entry("models/", tarfile.DIRTYPE), entry("models/a.safetensors", data=EVIL)]), {}),
        ],
    )
    with pytest.raises(Mismatch, match=r"layer 1 .* is not a model layer but comes after the model layers"):
        verify(image)
    with pytest.raises(HostileEntry, match="comes after the model layers"):
        pull(image, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    report = readback.inspect(ref(image), OPTIONS)
    assert report["warnings"] and "comes after the model layers" in report["warnings"][0]
    assert "WARNING" in readback.render_inspect(report)


@pytest.mark.parametrize("name", ["models/.wh.a.safetensors", "models/.wh..wh..opq", "bin/.wh.sh"])
def test_whiteouts_in_a_model_layer_are_refused(tmp_path: Path, name: str) -> None:
    data = layer([entry("models/", tarfile.DIRTYPE), entry("models/b.json", data=b"{}"), entry(name)])
    image = hand_made(tmp_path / "layout", [(data, DIRECTORY)])
    with pytest.raises(HostileEntry, match="a whiteout"):
        pull(image, tmp_path / "out")
    assert not (tmp_path / "out" / "b.json").exists()


# ---- S6: the annotated path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "annotations",
    [
        {"olot.layer.content.type": "file", "org.opencontainers.image.title": "/etc/hostname"},
        {"olot.layer.content.type": "file", "olot.layer.content.inlayerpath": "/models/../../x"},
        {"olot.layer.content.type": "file", "olot.layer.content.inlayerpath": "/etc/hostname"},
        {"olot.layer.content.type": "file", "org.opencontainers.image.title": "../x"},
        {"olot.layer.content.type": "directory", "olot.layer.content.inlayerpath": "/models/../.."},
    ],
    ids=["absolute-title", "dotdot-path", "path-outside", "dotdot-title", "directory-dotdot"],
)
def test_an_annotated_path_outside_models_is_refused(tmp_path: Path, annotations: dict[str, str]) -> None:
    secret = Path("/etc/hostname").read_bytes() if Path("/etc/hostname").exists() else b"x"
    annotations = {**annotations, "olot.layer.content.digest": "sha256:" + hashlib.sha256(secret).hexdigest()}
    image = hand_made(tmp_path / "layout", [(layer([entry("models/x", data=b"1")]), annotations)])
    for attempt in (
        lambda: pull(image, tmp_path / "out"),
        lambda: verify(image),
        lambda: readback.inspect(ref(image), OPTIONS),
    ):
        with pytest.raises(ImageReadError, match="annotated path"):
            attempt()
    assert not (tmp_path / "out").exists()


# ---- S7: what is read is bounded -----------------------------------------------------------------


def test_a_blob_longer_than_its_descriptor_is_refused(tmp_path: Path) -> None:
    data = layer([entry("models/a.safetensors", data=GOOD)])
    image = hand_made(tmp_path / "layout", [(data, file_layer("a.safetensors", GOOD))])
    doc = json.loads(_blob(tmp_path / "layout", _top(tmp_path / "layout")))
    descriptor = Descriptor.from_json(doc["layers"][0])
    short = Descriptor(descriptor.media_type, descriptor.digest, 1024, descriptor.annotations)
    with ImageReader(ref(image), OPTIONS) as reader, pytest.raises(ImageReadError, match="more than the 1024 bytes"):
        list(reader.layer_chunks(short))
    with ImageReader(ref(image), OPTIONS) as reader, pytest.raises(ImageReadError, match="more than the 1024 bytes"):
        reader.blob(short)


def test_a_blob_read_whole_has_its_digest_checked(tmp_path: Path) -> None:
    image = hand_made(tmp_path / "layout", [(layer([entry("models/a", data=GOOD)]), file_layer("a", GOOD))])
    other = Layout(tmp_path / "layout").write_blob(b"a bundle, changed")
    wrong = Descriptor("application/vnd.dev.sigstore.bundle.v0.3+json", "sha256:" + "1" * 64, 17)
    (tmp_path / "layout" / "blobs" / "sha256" / ("1" * 64)).write_bytes(_blob(tmp_path / "layout", other))
    with ImageReader(ref(image), OPTIONS) as reader, pytest.raises(ImageReadError, match="holds other bytes"):
        reader.blob(wrong)


def test_bytes_after_the_end_of_the_tar_are_bounded(tmp_path: Path) -> None:
    data = gzip.compress(layer([entry("models/a", data=GOOD)]) + b"\0" * (3 << 20))
    image = hand_made(tmp_path / "layout", [(data, file_layer("a", GOOD))])
    with pytest.raises(Mismatch, match=r"unpacks to more than|follow the end of its tar"):
        verify(image)


# ---- S8: hostile entries are refused by name, never an internal error ----------------------------------


@pytest.mark.parametrize(
    ("members", "named", "says"),
    [
        (
            [entry("models/sub/", tarfile.DIRTYPE), entry("models/h", tarfile.LNKTYPE, link="models/sub")],
            "models/h",
            "a dir before it",
        ),
        (
            [entry("models/sub/", tarfile.DIRTYPE), entry("models/sub", tarfile.SYMTYPE, link="x")],
            "models/sub",
            "given twice",
        ),
        (
            [entry("models/h", tarfile.LNKTYPE, link="models/later"), entry("models/later", data=b"1")],
            "models/h",
            "nothing before it",
        ),
        ([entry("models/" + "a" * 300 + "/x", data=b"1")], "models/aaa", "longer than 255 bytes"),
        ([entry("models/f", data=b"1"), entry("models/f/x", data=b"2")], "models/f/x", "under /models/f, a file"),
        (
            [entry("models/l", tarfile.SYMTYPE, link="."), entry("models/l/x", data=b"2")],
            "models/l/x",
            "under /models/l, a symlink",
        ),
    ],
    ids=["hardlink-to-dir", "link-over-dir", "hardlink-forward", "long-name", "under-a-file", "under-a-link"],
)
def test_hostile_entries_are_refused_naming_them(tmp_path: Path, members: list, named: str, says: str) -> None:
    image = hand_made(tmp_path / "layout", [(layer([entry("models/", tarfile.DIRTYPE), *members]), DIRECTORY)])
    result = run_cli("pull", image, str(tmp_path / "out"))
    assert result.returncode == 1, result.output
    assert "internal error" not in result.stderr and "refusing" in result.stderr, result.stderr
    assert named in result.stderr and says in result.stderr, result.stderr


# ---- C3: one layer stream for every compression -------------------------------------------------


def test_multi_member_gzip_and_bzip2_layers_are_read(tmp_path: Path) -> None:
    tar = layer([entry("models/", tarfile.DIRTYPE), entry("models/a.safetensors", data=GOOD * 1000)])
    members = gzip.compress(tar[:700]) + gzip.compress(tar[700:])
    image = hand_made(
        tmp_path / "layout",
        [
            (members, file_layer("a.safetensors", GOOD * 1000)),
            (bz2.compress(layer([entry("models/b", data=b"b")])), file_layer("b", b"b")),
        ],
    )
    assert verify(image)
    pull(image, tmp_path / "out")
    assert (tmp_path / "out" / "a.safetensors").read_bytes() == GOOD * 1000


# ---- S3: with a key, the bytes are read; sign reads them too --------------------------------------------


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "k.pem", tmp_path / "pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def test_a_copied_signature_over_swapped_bytes_does_not_verify(tmp_path: Path) -> None:
    from modelcar.signing.sign import attach

    private, public = _keys(tmp_path)
    where = tmp_path / "layout"
    good = hand_made(
        where, [(layer([entry("models/a.safetensors", data=GOOD)]), file_layer("a.safetensors", GOOD))], "good"
    )
    assert readback.sign_image(ref(good), OPTIONS, private, check_bytes=True).files == 1
    assert verify(good, public_key=public)
    # the attacker's image: the old annotation over other bytes, the bundle copied to its tag
    evil = hand_made(
        where, [(layer([entry("models/a.safetensors", data=EVIL)]), file_layer("a.safetensors", EVIL, GOOD))], "evil"
    )
    with ImageReader(ref(good), OPTIONS) as reader:
        bundle = reader.blob(reader.signature(reader.read().digest).layers[0])  # type: ignore[union-attr]
        with ImageReader(ref(evil), OPTIONS) as other:
            attach(reader.store, other.read().digest, bundle)
    with pytest.raises(Mismatch, match=r"/models/a.safetensors: its content has digest"):
        verify(evil, public_key=public)
    # signing reads the bytes too (unless told to trust the annotations)
    result = run_cli("sign", evil, "--sign-key", str(private))
    assert result.returncode == 1 and "/models/a.safetensors" in result.stderr, result.output
    trusted = run_cli("sign", evil, "--sign-key", str(private), "--trust-annotations")
    assert trusted.returncode == 0, trusted.output


# ---- C4, C5: bad input first; no model layers; platforms ---------------------------------------------


def test_bad_verify_input_exits_2_before_any_layer_is_read(tmp_path: Path) -> None:
    image = hand_made(tmp_path / "layout", [(layer([entry("models/a", data=GOOD)]), file_layer("a", GOOD))])
    doc = json.loads(_blob(tmp_path / "layout", _top(tmp_path / "layout")))
    (tmp_path / "layout" / "blobs" / "sha256" / doc["layers"][0]["digest"].removeprefix("sha256:")).unlink()
    key = run_cli("verify", image, "--public-key", str(tmp_path / "nonexistent.pem"))
    assert key.returncode == 2 and "--public-key" in key.stderr, key.output
    (tmp_path / "not-a-key.pem").write_text("hello")
    key = run_cli("verify", image, "--public-key", str(tmp_path / "not-a-key.pem"))
    assert key.returncode == 2 and "not a readable PEM public key" in key.stderr, key.output
    local = run_cli("verify", image, "--local-model", str(tmp_path / "nonexistent"))
    assert local.returncode == 2 and "--local-model" in local.stderr, local.output


def test_verify_fails_an_image_without_model_layers(tmp_path: Path) -> None:
    image = hand_made(tmp_path / "layout", [(layer([entry("bin/", tarfile.DIRTYPE), entry("bin/sh", data=b"x")]), {})])
    result = run_cli("verify", image)
    assert result.returncode == 1 and "no model layers" in result.stderr, result.output


def test_local_model_is_checked_against_every_platform(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout")
    layout.init()
    children = []
    for arch, data in (("amd64", GOOD), ("arm64", EVIL)):
        manifest = _manifest(layout, [(layer([entry("models/a.bin", data=data)]), file_layer("a.bin", data))], arch)
        children.append({**manifest.descriptor.to_json(), "platform": {"os": "linux", "architecture": arch}})
    index = Blob.of(OCI_INDEX, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    layout.write_blob(index.data)
    layout.tag(index.descriptor, "latest")
    local = tmp_path / "local"
    local.mkdir()
    (local / "a.bin").write_bytes(GOOD)
    with pytest.raises(Mismatch, match=r"a.bin: .* the image \(linux/arm64\) says"):
        verify(f"oci:{tmp_path / 'layout'}:latest", local_model=local)


# ---- P1: inspect reads no layer, base layers included ----------------------------------------------------


def test_inspect_reads_no_base_layer_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tools = [entry(f"bin/{n}", data=b"x") for n in ("sh", "ln", "sleep", "ls")]
    for info, _ in tools:
        info.mode = 0o755
    base = layer([entry("bin/", tarfile.DIRTYPE), *tools])
    model = (layer([entry("models/a", data=b"1")]), file_layer("a", b"1"))
    image = hand_made(tmp_path / "layout", [(base, {}), model])
    read: list[str] = []
    real = LayoutStore.blob
    monkeypatch.setattr(LayoutStore, "blob", lambda self, d: (read.append(d.digest), real(self, d))[1])
    report = readback.inspect(ref(image), OPTIONS)
    assert read == [] and report["kserve"]["ready"] is False
    assert "--check-base" in " ".join(report["kserve"]["notes"])
    checked = readback.inspect(ref(image), OPTIONS, check_base=True)
    assert len(read) == 1 and checked["kserve"]["ready"] is True
    read.clear()
    assert readback.inspect(ref(image), OPTIONS)["kserve"]["ready"] is True and read == []  # remembered

    recorded = hand_made(
        tmp_path / "recorded",
        [(base, {}), model],
        annotations={"io.modelcar.kserve.ready": "false", "io.modelcar.kserve.missing": "ls"},
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    report = readback.inspect(ref(recorded), OPTIONS)
    assert read == [] and report["kserve"]["ready"] is False and report["kserve"]["base"]["missing"] == ["ls"]


def test_refusals_are_modelcar_errors() -> None:
    assert issubclass(HostileEntry, ModelcarError) and issubclass(Mismatch, ModelcarError)
    assert issubclass(ImageReadError, ModelcarError)


# ---- C5: every attached signature is a candidate ---------------------------------------------------


_LISTED = [
    {"artifactType": "application/vnd.model-signing.signature.v0.1", "digest": "sha256:" + "a" * 64},
    {"artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json", "digest": "sha256:" + "b" * 64},
    {"artifactType": "application/vnd.unknown", "digest": "sha256:" + "d" * 64},
    {"artifactType": "application/vnd.model-signing.signature.v0.1", "digest": "sha256:" + "c" * 64},
]


class _FakeClient:
    """The referrers API of a registry listing four: unreadable, cosign, of no known type, model-signing."""

    def want(self, repository: str, scope: str) -> None:
        pass

    def request(self, method: str, path: str, **kwargs: object) -> object:
        class Response:
            status_code = 200

            def json(self) -> dict:
                return {"manifests": _LISTED}

        return Response()


def test_every_referrer_is_listed_an_unreadable_one_skipped() -> None:
    from modelcar.oci.store import RegistryStore

    store = object.__new__(RegistryStore)
    store.client, store.repository = _FakeClient(), "repo"  # type: ignore[assignment]
    bundle = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest": "sha256:" + "e" * 64, "size": 9}
    docs = {"b": {"layers": []}, "c": {"layers": [bundle]}}
    store.manifest = lambda digest: (  # type: ignore[method-assign]
        json.dumps(docs[digest[7]]).encode() if digest[7] in docs else b"not json",
        OCI_MANIFEST,
        digest,
    )
    reader = object.__new__(ImageReader)
    reader.store = store
    found = reader._referrers(store, "sha256:" + "0" * 64)
    assert [(s.kind, s.manifest_digest[7]) for s in found] == [("cosign", "b"), ("model-signing", "c")]


def test_verify_tries_each_signature_until_one_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelcar.oci.reader import Signature

    private, public = _keys(tmp_path)
    image = hand_made(tmp_path / "layout", [(layer([entry("models/a", data=GOOD)]), file_layer("a", GOOD))])
    readback.sign_image(ref(image), OPTIONS, private, check_bytes=True)
    real = ImageReader.signatures
    cosign = Signature("cosign", "referrers", "sha256:" + "b" * 64, [])
    monkeypatch.setattr(ImageReader, "signatures", lambda self, digest: [cosign, *real(self, digest)])
    checked = verify(image, public_key=public)
    assert checked[0].startswith("signature (model-signing, tag sha256-")
    monkeypatch.setattr(ImageReader, "signatures", lambda self, digest: [cosign, cosign])
    with pytest.raises(Mismatch, match=r"no signature attached to .* verifies with .* \(2 tried\)"):
        verify(image, public_key=public)
