"""Determinism across decoders: one programme in five containers/codecs/rates gives the same cue sheet, and
decoders whose containers carry no priming information are re-aligned (:func:`bgmid.audio.decoder_delay`)."""

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, TRACK_S
from signals import encode, synth_music
from test_monitor_e2e import CUES, make_programme

from bgmid.audio import decoder_delay, load, resample
from bgmid.index import open_index
from bgmid.monitor import Monitor


def _lag(x: np.ndarray, y: np.ndarray, sr: int, max_lag: int = 2500) -> int:
    """Samples by which ``y`` is late against ``x`` (cross-correlation over 1-9 s)."""
    a = x[sr : 9 * sr]
    lags = np.arange(-max_lag, max_lag)
    return int(lags[np.argmax([float(np.dot(a, y[sr + k : 9 * sr + k])) for k in lags])])


@pytest.mark.parametrize(("codec", "fmt", "ext"), [
    ("mp2", "mpegts", "ts"),  # DVB radio and TV: MPEG-1 layer II in a TS
    ("aac", "mpegts", "ts"),
    ("ac3", "mpegts", "ts"),
    ("aac", "adts", "aac"),
    ("mp2", "mp2", "mp2"),
    ("aac", "mp4", "m4a"),  # the edit list already says: nothing more to drop
    ("libmp3lame", "mp3", "mp3"),  # the LAME header already says
])
def test_decoded_audio_starts_where_the_encoded_audio_did(tmp_path, codec, fmt, ext):
    sr = 48000
    x = (0.5 * synth_music(11, 10.0, sr)).astype(np.float32)
    p = encode(tmp_path / f"x.{ext}", x, sr, codec, fmt, bitrate=192000)
    y, _ = load(p, sr)
    assert _lag(x, y, sr) == 0  # uncorrected, the TS/ADTS/MP2 streams are 256-1024 samples (5-21 ms) late


def test_decoder_delay_table():
    mp2_header, mp3_header = b"\xff\xfd\x00\x00", b"\xff\xfb\x00\x00"  # MPEG-1 layer II, layer III
    assert decoder_delay("mpegts", "mp3float", mp2_header) == 481
    assert decoder_delay("mpegts", "mp3float", mp3_header) == 529
    assert decoder_delay("mp3", "mp2", mp2_header) == 481
    assert decoder_delay("mp3", "mp3float", mp3_header) == 0  # an MP3 file: its LAME header is trusted
    assert decoder_delay("aac", "aac") == 1024 and decoder_delay("mpegts", "ac3") == 256
    assert decoder_delay("mov,mp4,m4a,3gp,3g2,mj2", "aac") == 0 and decoder_delay("wav", "pcm_s16le") == 0


@pytest.fixture(scope="module")
def five_encodings(tmp_path_factory):
    """The end-to-end test programme as WAV, FLAC, MP3 (44.1 kHz), AAC/M4A and MP2 in MPEG-TS (48 kHz)."""
    d = tmp_path_factory.mktemp("enc")
    x = make_programme()
    x44, x48 = resample(x, SR, 44100), resample(x, SR, 48000)
    sf.write(d / "p.wav", x, SR)
    return {
        "wav": d / "p.wav",
        "flac": encode(d / "p.flac", x, SR, "flac"),
        "mp3": encode(d / "p.mp3", x44, 44100, "libmp3lame", bitrate=128000),
        "m4a": encode(d / "p.m4a", x48, 48000, "aac", "mp4", bitrate=128000),
        "ts": encode(d / "p.ts", x48, 48000, "mp2", "mpegts", bitrate=192000),
    }


def test_five_encodings_give_the_same_cues(built_index, five_encodings):
    with open_index(built_index) as store:
        mon = Monitor(store, alteration=None)
        sheets = {k: mon.run(p).cues for k, p in five_encodings.items()}
    ref = sheets["wav"]
    assert [c.title for c in ref] == [f"track{i:02d}" for i, *_ in CUES]
    for k, cues in sheets.items():
        got = [(c.title, round(c.programme_start_s, 2), round(c.programme_end_s, 2)) for c in cues]
        assert [c.track_id for c in cues] == [c.track_id for c in ref], (k, got)
        for c, r in zip(cues, ref, strict=True):
            # the issue asks 0.5 s; measured 0.00 s on this programme (edges from landmarks and the floor)
            assert abs(c.programme_start_s - r.programme_start_s) <= 0.25, (k, got)
            assert abs(c.programme_end_s - r.programme_end_s) <= 0.25, (k, got)
            assert abs((c.track_start_s - c.programme_start_s) - (r.track_start_s - r.programme_start_s)) < 0.05
            assert c.loops == r.loops == 0


def test_surround_centre_channel_is_left_out_of_the_side_signal(tmp_path, built_index):
    """5.1 with dialogue in FC and music in the others: the side signal is the music alone (what the centre
    split is for), the mix has both; stereo has no side signal. The side signal identifies the track."""
    import av

    from bgmid.audio import load_channels
    from bgmid.match import Matcher

    sr = 48000
    music = resample(synth_music(103, 12.0, SR), SR, sr)  # track03 of the index
    from signals import synth_speech

    speech = resample(synth_speech(9, 12.0, 16000), 16000, sr)[: music.size]
    n = min(music.size, speech.size)
    x = np.zeros((6, n), np.float32)  # FL FR FC LFE BL BR
    x[[0, 1, 4, 5]] = 0.3 * music[:n]
    x[2] = 0.9 * speech[:n]
    x[3] = 0.05 * np.sin(2 * np.pi * 50 * np.arange(n) / sr)
    p = tmp_path / "six.flac"
    with av.open(str(p), "w") as c:
        st = c.add_stream("flac", rate=sr)
        st.layout = "5.1"
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout="5.1")
        fr.sample_rate = sr
        for pkt in list(st.encode(fr)) + list(st.encode(None)):
            c.mux(pkt)
    mix, side, rate = load_channels(p, SR)
    assert rate == SR and side is not None and mix.size == side.size
    ref = resample(0.3 * music[:n], sr, SR)[: side.size]
    assert np.corrcoef(side, ref)[0, 1] > 0.999  # no dialogue in it
    sp = resample(0.9 * speech[:n], sr, SR)[: mix.size]
    assert np.corrcoef(mix - ref * 4 / 5, sp / 5)[0, 1] > 0.99  # the mix: mean of the five non-LFE channels
    stereo = tmp_path / "two.flac"
    sf.write(stereo, np.stack([music, music], 1)[: sr * 2], sr)
    assert load_channels(stereo)[1] is None
    with open_index(built_index) as store:
        m = Matcher(store).identify(side, SR)
    assert m and m[0].title == "track03"


def _write_51(path, x: np.ndarray, sr: int, codec: str = "flac", fmt: str | None = None) -> None:
    """Six channels (FL FR FC LFE BL BR, float32) as 5.1 audio (FLAC; AC3 in MPEG-TS as broadcast)."""
    import av

    with av.open(str(path), "w", format=fmt) as c:
        st = c.add_stream(codec, rate=sr)
        st.layout = "5.1"
        if codec != "flac":
            st.bit_rate = 384000
        n = st.codec_context.frame_size or x.shape[1]
        for i in range(0, x.shape[1], n):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + n], np.float32), format="fltp",
                                            layout="5.1")
            fr.sample_rate, fr.pts = sr, i
            for pkt in st.encode(fr):
                c.mux(pkt)
        for pkt in st.encode(None):
            c.mux(pkt)


def test_surround_monitoring_uses_the_channels_without_the_dialogue(tmp_path, built_index):
    """A 5.1 programme with dialogue only in the centre and a quiet cue (track02, 25 s) in the four other
    channels, -21 dB under the dialogue in the mono downmix: the downmix alone finds the cue weakly or not at
    all; the side signal pooled with it (``surround="auto"``) finds it with its boundaries and more evidence,
    the same from AC3 5.1 in MPEG-TS at 48 kHz (decoder delay dropped as for mono). ``"centre"`` on a stereo
    file is a clear error."""
    from signals import synth_speech

    from bgmid.audio import AudioError

    sr, dur, a, b = 48000, 45.0, 10.0, 35.0
    speech = resample(synth_speech(11, dur, 16000), 16000, sr)
    music = np.zeros_like(speech)
    m = resample(synth_music(102, TRACK_S, SR), SR, sr)[: int((b - a) * sr)]
    music[int(a * sr):int(a * sr) + m.size] = m
    p_s, p_m = float(np.mean(speech**2)), float(np.mean(m**2))
    g = np.sqrt(p_s * 10 ** (-21 / 10) / p_m) * 5 / 4  # -21 dB under the dialogue in the mean of 5 channels
    x = np.zeros((6, speech.size), np.float32)
    x[[0, 1, 4, 5]] = g * music
    x[2] = speech
    x *= 0.5 / np.abs(x).max()
    p = tmp_path / "show51.flac"
    _write_51(p, x, sr)
    with open_index(built_index) as store:
        mon = Monitor(store, alteration=None)
        mono = [c for c in mon.run(p, surround="mono").cues if c.title == "track02"]
        both = mon.run(p).cues
        ts = tmp_path / "show51.ts"
        _write_51(ts, x, sr, "ac3", "mpegts")
        broadcast = mon.run(ts).cues
        stereo = tmp_path / "two.wav"
        sf.write(stereo, np.stack([speech, speech], 1), sr)
        with pytest.raises(AudioError, match="centre channel"):
            mon.run(stereo, surround="centre")
    assert [c.title for c in both] == ["track02"]
    c = both[0]
    assert abs(c.programme_start_s - a) < 1.5 and abs(c.programme_end_s - b) < 1.5, (c.programme_start_s,
                                                                                 c.programme_end_s)
    assert [d.title for d in broadcast] == ["track02"]
    assert abs(broadcast[0].programme_start_s - c.programme_start_s) < 0.5
    assert abs(broadcast[0].programme_end_s - c.programme_end_s) < 0.5
    # measured: mono 64 aligned landmarks over 21.1 s, with the side signal 786 over 25.3 s (AC3/TS: 67, 865);
    # the mono cue's edges are the music floor's (refine_edges: 25.1 s), so its evidence is what differs
    assert not mono or 4 * mono[0].score < c.score, [(m.score, m.duration_s) for m in mono]


def test_masked_tail_ends_where_the_music_does_in_wav_and_ts(built_index, tmp_path):
    """A cue whose last 6 s lie -16 dB under dialogue: its landmarks stop where the dialogue starts (so one
    landmark more or less in a codec's copy moved such an out point by seconds), the music's floor in the
    dialogue's gaps goes on to the real end (:func:`bgmid.monitor.floor_edge`). The music has a sustained
    chord under its melody, as most music has (the test melody alone decays to silence between notes), the
    dialogue its room's noise 45 dB under it. WAV and MP2 in MPEG-TS at 48 kHz give the same out point, at
    the music's end."""
    from dataclasses import replace

    from signals import synth_speech

    from bgmid.monitor import MonitorConfig

    dur, a, solo, b = 40.0, 10.0, 16.0, 22.0  # the music alone over [a, solo), under dialogue to b
    speech = resample(synth_speech(21, dur, 11025), 11025, SR)[: int(dur * SR)]
    speech[int(a * SR) : int(solo * SR)] = 0
    rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
    speech = speech + 10 ** (-45 / 20) * rms * np.random.default_rng(5).standard_normal(speech.size)  # room noise
    m = synth_music(102, TRACK_S, SR)[: int((b - a) * SR)]  # track02
    t = np.arange(m.size) / SR
    chord = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 164.8, 220.0, 277.2))
    m = m + 0.5 * chord * np.sqrt(np.mean(m.astype(np.float64) ** 2) / np.mean(chord**2))
    ps = float(np.mean(speech[int(solo * SR) :].astype(np.float64) ** 2))
    x = speech.astype(np.float64)
    x[int(a * SR) : int(a * SR) + m.size] += m * np.sqrt(ps * 10 ** (-16 / 10) / float(np.mean(m**2)))
    x = (0.5 * x / np.abs(x).max()).astype(np.float32)
    sf.write(tmp_path / "tail.wav", x, SR)
    ts = encode(tmp_path / "tail.ts", resample(x, SR, 48000), 48000, "mp2", "mpegts", bitrate=192000)
    with open_index(built_index) as store:
        mon = Monitor(store, alteration=None)
        got = {k: mon.run(p).cues for k, p in (("wav", tmp_path / "tail.wav"), ("ts", ts))}
        bare = Monitor(store, config=replace(MonitorConfig(), edge_extend_s=0.0), alteration=None).run(ts).cues
    assert [c.title for c in bare] == ["track02"] and bare[0].programme_end_s < b - 4  # measured 16.3 s
    for k, cues in got.items():
        assert [c.title for c in cues] == ["track02"], k
        c = cues[0]
        assert abs(c.programme_start_s - a) < 0.5 and abs(c.programme_end_s - b) < 0.5, (k, c.programme_end_s)
        assert abs((c.track_end_s - c.track_start_s) - c.duration_s) < 1e-6  # the track position moved with it
    assert abs(got["wav"][0].programme_end_s - got["ts"][0].programme_end_s) <= 0.25
