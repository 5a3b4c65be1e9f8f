"""`asc-bench data download`: fetch a dataset's official archives with pooch, verify, unpack.

Guarantees:
- **Sources** are the official ones (Zenodo records and release URLs named in specs/datasets.md and on
  the datasets' pages). The registry is data (`SOURCES`), overridable with a YAML file
  (`--registry FILE` or `$ASC_BENCH_DATA_SOURCES`) whose entries replace built-ins of the same name.
- **Verified**: a file with a known md5 must match it (pooch checks it; a mismatch is refused and the file
  deleted), a file with a known size must have it, and every archive must be intact: every zip member's CRC
  (`ZipFile.testzip`) or a full read of a tar.gz (gzip CRC). specs/datasets.md records no per-file md5, so
  each built-in md5 and size is copied from a source that publishes it for the same URL and file name, and
  each entry's notes name that source (repository + file path) or say that none is published:
  TUT17 and TAU22 from dcase_util's dataset classes (which check them on download), NSynth and SCv2 from
  HEAR's hear-preprocess (which checks them too; SCv2's size from tensorflow/datasets). ESC-50 (GitHub's
  zip of a moving branch), ICME24 (size only) and FSDKaggle2018 have none; add md5s from the Zenodo page
  to a registry file to have them checked.
- **Resumable**: bytes arrive in `<dir>/.downloads/<file>.part`; an interrupted transfer keeps them and
  the next run asks the server for the rest (HTTP Range). A server that ignores Range sends it all again.
- **Unpacked** into exactly the layout the adapter reads: archives are extracted into a temporary folder
  inside the target and their contents moved into place (archives of one dataset sharing a top folder
  merge), members escaping the target are refused, and a marker records each unpacked archive, so a
  rerun skips finished files. The archive is deleted after unpacking unless `keep_archives`.
- VoxCeleb1 needs registration: `download` prints what to do instead.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from asc_bench.api import AscBenchError, UsageError

REGISTRY_ENV = "ASC_BENCH_DATA_SOURCES"
UNPACK = ("zip", "tar", "none")


class DownloadError(AscBenchError):
    """A download or its verification failed; the message names the file and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    name: str                     # file name on disk
    url: str
    md5: str | None = None        # published md5, or None (see the module docstring)
    size: int | None = None       # published size in bytes, or None
    unpack: str = "zip"           # zip | tar | none (copied into the target as is)


@dataclass(frozen=True)
class DataSource:
    name: str                     # what `data download NAME` takes
    dataset: str                  # the adapter that reads it (`--data-root` of that dataset)
    files: tuple[RemoteFile, ...] = ()
    page: str = ""                # the official page
    layout: str = ""              # what ends up in the target
    manual: str = ""              # when set: no download, print this instead
    notes: tuple[str, ...] = ()


def _zenodo(record: int, names: Sequence[str], unpack: str = "zip",
            published: Mapping[str, tuple[str, int]] | None = None) -> tuple[RemoteFile, ...]:
    """Files of a Zenodo record; `published` maps a file name to its published (md5, size in bytes)."""
    published = published or {}
    return tuple(RemoteFile(n, f"https://zenodo.org/records/{record}/files/{n}?download=1",
                            *published.get(n, (None, None)), unpack=unpack)
                 for n in names)


NO_MD5 = "no md5 published"     # every built-in note on a file without an md5 starts with this
_DCASE_UTIL = "DCASE-REPO/dcase_util dcase_util/datasets/tut.py (commit a2694b0)"
_HEAR = "hearbenchmark/hear-preprocess hearpreprocess/{} (commit 610d864), whose pipeline checks it"
_TUT17 = "TUT-acoustic-scenes-2017-development"
_TAU22 = "TAU-urban-acoustic-scenes-2022-mobile-development"
# (md5, bytes) as published by dcase_util's TUTAcousticScenes_2017_DevelopmentSet for zenodo.org/record/400515
_TUT17_PUBLISHED = {
    f"{_TUT17}.doc.zip": ("2065495aaf3f1103e795c9899e2af1df", 54_796),
    f"{_TUT17}.meta.zip": ("9007fd4772d816590c5db5f5e9568f5d", 104_321),
    f"{_TUT17}.error.zip": ("802c700b021769e52a2c1e3b9c117a1b", 1_432),
    f"{_TUT17}.audio.1.zip": ("251325a9afaaad0326ad1c57f57d514a", 1_071_445_248),
    f"{_TUT17}.audio.2.zip": ("c26861e05147dc319b4250eb103d9d99", 1_073_453_613),
    f"{_TUT17}.audio.3.zip": ("a4815775f8a5e629179726ee4cd4f55a", 1_073_077_819),
    f"{_TUT17}.audio.4.zip": ("1732b03afe8c53ef8bba80ba14766e57", 1_072_822_038),
    f"{_TUT17}.audio.5.zip": ("611be754a0c951185c6ae4b7643c19a0", 1_072_644_652),
    f"{_TUT17}.audio.6.zip": ("165a201db800d3ea76fce5a9c2bd97d7", 1_072_667_888),
    f"{_TUT17}.audio.7.zip": ("c7d79db84264401c0f8680dcc36013ad", 1_073_417_661),
    f"{_TUT17}.audio.8.zip": ("35043f25123439392338c790494c7a19", 1_072_381_222),
    f"{_TUT17}.audio.9.zip": ("0805dcf5d8e6871dc9610182b2efb93a", 1_072_087_738),
    f"{_TUT17}.audio.10.zip": ("5df83a191295a04e290b125c634e13e7", 1_046_262_120),
}
# (md5, bytes) as published by dcase_util's TAUUrbanAcousticScenes_2022_Mobile_DevelopmentSet for
# zenodo.org/record/6337421
_TAU22_PUBLISHED = {
    f"{_TAU22}.doc.zip": ("9c4f610bdb5d3e3e72a17d393a26452a", 16_819),
    f"{_TAU22}.meta.zip": ("419b6ff6570f1030730352dc80cd8d15", 1_538_781),
    f"{_TAU22}.audio.1.zip": ("8be14bdbd844481dce059ab31fbd2239", 1_736_050_960),
    f"{_TAU22}.audio.2.zip": ("e821abda49b069248bb75eab39df7575", 1_791_821_989),
    f"{_TAU22}.audio.3.zip": ("9c7897f78bb42ca0008936daddf3f8f3", 1_878_561_499),
    f"{_TAU22}.audio.4.zip": ("53ec3e37c0fc0be75f53c5abbc5300b8", 1_887_825_128),
    f"{_TAU22}.audio.5.zip": ("528422c33c5d10263203d2c61cb1f3be", 1_832_871_840),
    f"{_TAU22}.audio.6.zip": ("4759a9465c903e13e57d5e82e791fc28", 1_836_165_296),
    f"{_TAU22}.audio.7.zip": ("6d545fc83a55a17856a9ccc1ac9aff6b", 1_737_838_582),
    f"{_TAU22}.audio.8.zip": ("3a2916a9b5d3f43cc7a22a62b180b0d9", 1_758_317_867),
    f"{_TAU22}.audio.9.zip": ("071f664c86639ad730f7be4e3c39d886", 1_790_044_829),
    f"{_TAU22}.audio.10.zip": ("e0839d019e9b77ecbcbb0eff85965530", 1_736_836_871),
    f"{_TAU22}.audio.11.zip": ("fc60f1c83726be3963ae14fbcb95eeb4", 1_754_618_148),
    f"{_TAU22}.audio.12.zip": ("02246547f86c0a814dc63ec65d7033bb", 1_748_795_940),
    f"{_TAU22}.audio.13.zip": ("88ae9ef884665140d1572d8061725e00", 1_844_234_922),
    f"{_TAU22}.audio.14.zip": ("c3f400d74ae90e5190dc518cde43de47", 1_854_884_822),
    f"{_TAU22}.audio.15.zip": ("85594c6fe4f91c10aa2a410f748103b8", 1_877_789_093),
    f"{_TAU22}.audio.16.zip": ("6e2df8438c69f6789414aeba8cbad9d8", 435_379_083),
}
SOURCES: dict[str, DataSource] = {s.name: s for s in (
    DataSource("esc50", "esc50", (RemoteFile("ESC-50-master.zip", "https://github.com/karoldvl/ESC-50/archive/master.zip"),),
               page="https://github.com/karolpiczak/ESC-50", layout="ESC-50-master/{audio,meta}",
               notes=(f"{NO_MD5}: GitHub builds this zip of the master branch on request, so its bytes change with "
                      "every commit (the md5 soundata and HEAR pinned for this URL went stale: soundata/soundata issue "
                      "#208); verified by the zip CRCs",
                      "GitHub archive of the master branch (the repository holds the audio)")),
    DataSource("tut17", "tut17", _zenodo(400515, [f"{_TUT17}.{p}.zip" for p in
                                                 ("doc", "meta", "error", *(f"audio.{i}" for i in range(1, 11)))],
                                         published=_TUT17_PUBLISHED),
               page="https://zenodo.org/records/400515", layout=f"{_TUT17}/{{audio,meta.txt,evaluation_setup}}",
               notes=(f"md5 and size of every file: {_DCASE_UTIL}, class TUTAcousticScenes_2017_DevelopmentSet "
                      "(same Zenodo record and file names)", "~10.7 GB in ten audio zips")),
    DataSource("tau22", "tau22", _zenodo(6337421, [f"{_TAU22}.{p}.zip" for p in
                                                  ("doc", "meta", *(f"audio.{i}" for i in range(1, 17)))],
                                         published=_TAU22_PUBLISHED),
               page="https://zenodo.org/records/6337421", layout=f"{_TAU22}/{{audio,meta.csv,evaluation_setup}}",
               notes=(f"md5 and size of every file: {_DCASE_UTIL}, class "
                      "TAUUrbanAcousticScenes_2022_Mobile_DevelopmentSet (same Zenodo record and file names)",
                      "~27 GB in sixteen audio zips")),
    DataSource("icme24", "icme24", (
        RemoteFile("ICME2024_GC_ASC_dev.zip", "https://zenodo.org/records/10616533/files/ICME2024_GC_ASC_dev.zip?download=1",
                   size=5_271_935_462),
        RemoteFile("ICME2024_ASC_dev_label.csv",
                   "https://raw.githubusercontent.com/JishengBai/ICME2024ASC/main/data/ICME2024_ASC_dev_label.csv",
                   unpack="none")),
               page="https://zenodo.org/records/10616533", layout="ICME2024_GC_ASC_dev/*.wav + ICME2024_ASC_dev_label.csv",
               notes=(f"{NO_MD5} for either file (the baseline's setup_data.py checks only the zip's size, "
                      "5,271,935,462 bytes, which is checked here too, with the zip CRCs)",
                      "labels come from the official baseline repository (branch name 'main' unverified)")),
    DataSource("nsynth-test", "nsynth", (RemoteFile("nsynth-test.jsonwav.tar.gz",
                                                    "http://download.magenta.tensorflow.org/datasets/nsynth/nsynth-test.jsonwav.tar.gz",
                                                    md5="5e6f8719bf7e16ad0a00d518b78af77d", unpack="tar"),),
               page="https://magenta.tensorflow.org/datasets/nsynth", layout="nsynth-test/{examples.json,audio}",
               notes=(f"md5: {_HEAR.format('nsynth_pitch.py')} (same URL); no size published",
                      "nsynth-5way1shot needs nsynth-test; nsynth-linear needs nsynth-valid too")),
    DataSource("nsynth-valid", "nsynth", (RemoteFile("nsynth-valid.jsonwav.tar.gz",
                                                     "http://download.magenta.tensorflow.org/datasets/nsynth/nsynth-valid.jsonwav.tar.gz",
                                                     md5="87e94a00a19b6dbc99cf6d4c0c0cae87", unpack="tar"),),
               page="https://magenta.tensorflow.org/datasets/nsynth", layout="nsynth-valid/{examples.json,audio}",
               notes=(f"md5: {_HEAR.format('nsynth_pitch.py')} (same URL); no size published",
                      "download into the same folder as nsynth-test")),
    DataSource("scv2", "scv2", (RemoteFile("speech_commands_v0.02.tar.gz",
                                           "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
                                           md5="6b74f3901214cb2c2934e98196829835", size=2_428_923_189, unpack="tar"),),
               page="https://arxiv.org/abs/1804.03209", layout="<word>/*.wav, validation_list.txt, testing_list.txt (no top folder)",
               notes=(f"md5: {_HEAR.format('speech_commands.py')} (same URL); size: tensorflow/datasets "
                      "tensorflow_datasets/url_checksums/speech_commands.txt (same URL, which also gives the sha256 "
                      "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58)",)),
    DataSource("fsdkaggle2018", "fsdkaggle2018", _zenodo(2552860, [f"FSDKaggle2018.{p}.zip" for p in
                                                                   ("doc", "meta", "audio_train", "audio_test")]),
               page="https://zenodo.org/records/2552860",
               layout="FSDKaggle2018.{audio_train,audio_test,meta,doc}/",
               notes=(f"{NO_MD5} in a repository this project could read (dcase_util, soundata and hear-preprocess "
                      "have no FSDKaggle2018 class); verified by the zip CRCs. The Zenodo page lists the md5s: add "
                      "them in a registry file to have them checked",)),
    DataSource("voxceleb1", "voxceleb1", page="https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1.html",
               layout="wav/<speaker>/<video>/<utt>.wav + iden_split.txt (+ veri_test.txt)",
               manual=("VoxCeleb1 is distributed only after registration, so asc-bench cannot download it.\n"
                       "1. Request access on https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1.html (the form "
                       "sends you the download links and credentials).\n"
                       "2. Download vox1_dev_wav_partaa..partad and vox1_test_wav.zip, then "
                       "`cat vox1_dev_wav_parta* > vox1_dev_wav.zip`.\n"
                       "3. Unzip both into one folder DIR (they give DIR/wav/<speaker>/<video>/<utt>.wav) and put "
                       "iden_split.txt and veri_test.txt (from the same page) into DIR.\n"
                       "4. Check it: asc-bench data check voxceleb1 --data-root DIR")),
)}


# ------------------------------------------------------------------------------------------ registry
def load_registry(path: str | Path | None = None) -> dict[str, DataSource]:
    """The built-in sources, with the entries of `path` (or $ASC_BENCH_DATA_SOURCES) replacing same names."""
    sources = dict(SOURCES)
    path = path or os.environ.get(REGISTRY_ENV)
    if not path:
        return sources
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"data source registry {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("sources"), list):
        raise UsageError(f"{path}: expected a mapping with a list 'sources'")
    for i, entry in enumerate(data["sources"]):
        src = _parse_source(entry, f"{path}: sources[{i}]")
        sources[src.name] = src
    return sources


def _parse_source(entry: Any, where: str) -> DataSource:
    if not isinstance(entry, Mapping) or not entry.get("name") or not entry.get("dataset"):
        raise UsageError(f"{where}: needs 'name' and 'dataset'")
    unknown = sorted(set(entry) - {"name", "dataset", "files", "page", "layout", "manual", "notes"})
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {unknown}")
    files = []
    for j, f in enumerate(entry.get("files") or []):
        if not isinstance(f, Mapping) or not f.get("name") or not f.get("url"):
            raise UsageError(f"{where}.files[{j}]: needs 'name' and 'url'")
        bad = sorted(set(f) - {"name", "url", "md5", "size", "unpack"})
        if bad:
            raise UsageError(f"{where}.files[{j}]: unknown field(s) {bad}")
        unpack = str(f.get("unpack", "zip"))
        if unpack not in UNPACK:
            raise UsageError(f"{where}.files[{j}]: unpack must be one of {', '.join(UNPACK)}")
        md5 = str(f["md5"]).strip().lower() if f.get("md5") else None
        if md5 is not None and not is_md5(md5):
            raise UsageError(f"{where}.files[{j}]: md5 {f['md5']!r} is not 32 hexadecimal digits; copy it from "
                             f"the dataset's page, or leave it out to verify by size and archive integrity only")
        files.append(RemoteFile(str(f["name"]), str(f["url"]), md5,
                                int(f["size"]) if f.get("size") is not None else None, unpack))
    return DataSource(str(entry["name"]), str(entry["dataset"]), tuple(files), str(entry.get("page", "")),
                      str(entry.get("layout", "")), str(entry.get("manual", "")),
                      tuple(str(n) for n in entry.get("notes") or ()))


def is_md5(text: str) -> bool:
    """True for an md5 as the registry stores it: 32 lowercase hexadecimal digits."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def get_source(name: str, registry: str | Path | None = None) -> DataSource:
    sources = load_registry(registry)
    if name not in sources:
        from asc_bench.plugins import unknown_name

        raise unknown_name("sources", name, sources)
    return sources[name]


# ------------------------------------------------------------------------------------------ downloading
@dataclass
class ResumingDownloader:
    """A pooch downloader that appends to `partial` with an HTTP Range request, then hands the file over."""

    partial: Path
    progress: Callable[[int, int | None], None] = field(default=lambda done, total: None)
    chunk: int = 1 << 16
    timeout: float = 60.0
    ranges_asked: list[int] = field(default_factory=list)

    def __call__(self, url: str, output_file: Any, pooch: Any, check_only: bool = False) -> Any:
        import requests

        if check_only:
            return requests.head(url, allow_redirects=True, timeout=self.timeout).status_code == 200
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        have = self.partial.stat().st_size if self.partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        if have:
            self.ranges_asked.append(have)
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout, allow_redirects=True) as resp:
            if resp.status_code == 416 and have:           # nothing left to send: the part file is complete
                pass
            else:
                resp.raise_for_status()
                resuming = have and resp.status_code == 206
                total = int(resp.headers.get("Content-Length", 0)) + (have if resuming else 0) or None
                done = have if resuming else 0
                with open(self.partial, "ab" if resuming else "wb") as f:
                    for block in resp.iter_content(self.chunk):
                        f.write(block)
                        done += len(block)
                        self.progress(done, total)
                if total is not None and done < total:
                    raise DownloadError(f"transfer of {url} ended at {done} of {total} bytes")
        shutil.move(str(self.partial), str(output_file))


@dataclass
class DownloadReport:
    source: str
    target: Path
    downloaded: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    resumed: dict[str, int] = field(default_factory=dict)     # file -> bytes it resumed from
    notes: list[str] = field(default_factory=list)


def _marker(target: Path, f: RemoteFile) -> Path:
    return target / ".downloads" / f"{f.name}.done"


def download(name: str, target: str | Path, *, registry: str | Path | None = None, keep_archives: bool = False,
             show_progress: bool = True) -> DownloadReport:
    """Download, verify and unpack source `name` into `target` (see the module docstring)."""
    import pooch

    from asc_bench.progress import progress

    src = get_source(name, registry)
    if src.manual:
        raise UsageError(src.manual)
    target = Path(target).expanduser().resolve()
    downloads = target / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    report = DownloadReport(src.name, target, notes=list(src.notes))
    for f in src.files:
        if _marker(target, f).exists():
            report.already.append(f.name)
            continue
        partial = downloads / f"{f.name}.part"
        with progress(f"{f.name}", total=f.size, enabled=show_progress) as bar:
            loader = ResumingDownloader(partial, progress=bar.update)
            try:
                path = Path(pooch.retrieve(f.url, known_hash=f"md5:{f.md5}" if f.md5 else None, fname=f.name,
                                           path=str(downloads), downloader=loader, progressbar=False))
            except ValueError as exc:    # pooch: hash mismatch (it has deleted the file)
                raise DownloadError(f"{f.name} from {f.url} failed verification and was deleted: {exc}. The source "
                                    f"may be corrupt or changed; rerun to download it again, or check the md5 "
                                    f"on {src.page or 'the official page'}") from None
            except DownloadError as exc:
                raise DownloadError(f"{exc}; {_kept(partial)}") from None
            except Exception as exc:     # network errors: keep the part file for the next run
                raise DownloadError(f"download of {f.name} from {f.url} failed: {type(exc).__name__}: {exc}; "
                                    f"{_kept(partial)}") from None
        if loader.ranges_asked:
            report.resumed[f.name] = loader.ranges_asked[-1]
        try:
            verify_file(path, f)
        except DownloadError:
            path.unlink(missing_ok=True)
            raise
        unpack(path, f, target)
        _marker(target, f).write_text(f"{f.url}\n", encoding="utf-8")
        if f.unpack != "none" and not keep_archives:
            path.unlink(missing_ok=True)
        report.downloaded.append(f.name)
    return report


def _kept(partial: Path) -> str:
    if partial.exists() and partial.stat().st_size:
        return f"{partial.stat().st_size} bytes kept in {partial}; rerun the same command to resume"
    return "rerun the same command to retry"


def verify_file(path: Path, f: RemoteFile) -> None:
    """Size (when published) and archive integrity; raises DownloadError naming the file."""
    size = path.stat().st_size
    if f.size is not None and size != f.size:
        raise DownloadError(f"{f.name}: {size} bytes, the published size is {f.size}; deleted, rerun to download again")
    try:
        if f.unpack == "zip":
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            if bad is not None:
                raise DownloadError(f"{f.name}: member {bad} fails its CRC check (corrupt archive); deleted, rerun "
                                    f"to download again")
        elif f.unpack == "tar":
            with tarfile.open(path, "r:*") as t:
                for member in t:
                    if member.isfile():
                        with t.extractfile(member) as fh:
                            while fh.read(1 << 20):
                                pass
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DownloadError(f"{f.name} is not a valid {f.unpack} archive ({type(exc).__name__}: {exc}); deleted, "
                            f"rerun to download again") from None


def md5_file(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def unpack(path: Path, f: RemoteFile, target: Path) -> None:
    """Extract into a temporary folder inside `target`, then move every file into place (merging)."""
    if f.unpack == "none":
        shutil.copyfile(path, target / f.name)
        return
    tmp = target / ".downloads" / f"{f.name}.unpacking"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if f.unpack == "zip":
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    _inside(tmp, member, f.name)
                z.extractall(tmp)
        else:
            with tarfile.open(path, "r:*") as t:
                t.extractall(tmp, filter="data")
    except tarfile.FilterError as exc:
        raise DownloadError(f"{f.name}: refused to unpack {exc}") from None
    for root, _dirs, files in os.walk(tmp):
        for name in files:
            src = Path(root) / name
            dest = target / src.relative_to(tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
    shutil.rmtree(tmp, ignore_errors=True)


def _inside(base: Path, member: str, archive: str) -> None:
    dest = (base / member).resolve()
    if not dest.is_relative_to(base.resolve()):
        raise DownloadError(f"{archive}: member {member!r} would be written outside {base}; refused")
