import sys
from pathlib import Path

import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))

from signals import synth_music  # noqa: E402

N_TRACKS = 8
TRACK_S = 40.0
SR = 22050


@pytest.fixture(autouse=True, scope="session")
def _onnx_graph_cache(tmp_path_factory):
    """The default separator exports its mask network for ONNX Runtime into a cache on first use; tests keep
    that cache out of the user's models folder (``bgmid.separation.inference.graph_path``)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BGMID_ONNX_CACHE", str(tmp_path_factory.mktemp("onnx-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def music_dir(tmp_path_factory) -> Path:
    """A small 'music library' of generated tracks (FLAC and OGG, one without an extension)."""
    d = tmp_path_factory.mktemp("music")
    for i in range(N_TRACKS):
        x = synth_music(100 + i, TRACK_S, SR)
        if i == 0:
            sf.write(d / "track00", x, SR, format="OGG")  # extensionless OGG, as in blobwars-data
        elif i % 2:
            sf.write(d / f"track{i:02d}.flac", x, SR)
        else:
            sf.write(d / f"track{i:02d}.ogg", x, SR, format="OGG")
    return d


@pytest.fixture(scope="session")
def built_index(music_dir, tmp_path_factory) -> Path:
    from bgmid.index import open_index
    from bgmid.index.build import index_paths

    db = tmp_path_factory.mktemp("db") / "lib"
    with open_index(db, preset="p1", create=True) as store:
        rep = index_paths(store, [music_dir])
    assert len(rep.added) == N_TRACKS and not rep.failed
    return db


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    """Three short generated programmes (tests/archive.py) as WAV files."""
    from archive import LAYOUTS, make_programme

    d = tmp_path_factory.mktemp("archive")
    for k in range(len(LAYOUTS)):
        sf.write(d / f"prog{k}.wav", make_programme(k), SR)
    return d


@pytest.fixture(scope="session")
def monitored(archive, built_index, tmp_path_factory) -> dict[str, tuple[dict, str]]:
    """What ``bgmid monitor --out`` writes for each programme alone: {name: (JSON object, CSV text)}."""
    import json

    from bgmid.cli import main

    d = tmp_path_factory.mktemp("alone")
    out = {}
    for wav in sorted(archive.glob("*.wav")):
        assert main(["monitor", "--db", str(built_index), "--separator", "none", str(wav),
                     "--out", str(d / f"{wav.stem}.json")]) == 0
        assert main(["monitor", "--db", str(built_index), "--separator", "none", str(wav),
                     "--out", str(d / f"{wav.stem}.csv")]) == 0
        out[wav.stem] = (json.loads((d / f"{wav.stem}.json").read_text()), (d / f"{wav.stem}.csv").read_text())
    return out
