#!/usr/bin/env python3
"""Audio pipeline benchmark for `loa-audio` (run through scripts/bench-audio).

Measures, on the shared fixtures:
  1. encode speed of the whole `loa-audio encode` process (x realtime, median
     wall time of several runs) beside `opusenc` on the same input;
  2. bytes per audio minute at 6/8/12/16/24 kbit/s (and at 20/40/60 ms frames)
     beside `opusenc` at the same settings;
  3. speech quality (PESQ-WB, STOI) of the decoded output against the
     preprocessed 16 kHz reference, beside MP3 48 kbit/s (LAME) and opusenc.

Prints a human-readable report on stdout; with --json also prints one JSON
object (as the last line).  Needs: numpy, scipy, soundfile, pesq, pystoi,
and ffmpeg/ffprobe/opusenc/opusdec on PATH.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from pesq import pesq as _pesq
from pystoi import stoi as _stoi
from scipy.signal import correlate

SR = 16000
BITRATES = [6, 8, 12, 16, 24]
FRAMES = [20, 40, 60]
DEFAULT_FRAME = 60  # loa-audio's default frame size; the MP3 match is searched at it
MATCH_STEP = 2  # kbit/s: refinement step between sweep points when searching the MP3 match
MATCH_ABOVE = [28, 32, 40, 48, 64]  # tried in turn when nothing up to 24 kbit/s matches MP3 48k
SPEED_KBPS = 12
SPEED_FRAME = 20  # opusenc's default; passed explicitly to both tools
MP3_KBPS = 48
# opusenc flags used everywhere (plus --bitrate/--framesize).  opus-tools has
# --speech, and loa-audio tunes for speech unless --music, so we set it for
# opusenc too.  --downmix-mono makes opusenc encode one channel like ours
# (no-op on mono input).  Defaults otherwise (complexity 10, padding 512).
OPUSENC_FLAGS = ["--vbr", "--speech", "--downmix-mono", "--quiet"]

SPEED_INPUTS = [
    "bulletin-vi-22k-mono.wav",
    "bulletin-vi.flac",
    "human-voice-48k.wav",
    "bulletin-vi-44k-stereo.mp3",
    "bulletin-vi-48k-stereo.m4a",
    "bulletin-vi.ogg",
    "bulletin-vi-8k-mulaw.wav",
]
QUALITY_INPUTS = ["bulletin-vi-22k-mono.wav", "human-voice-48k.wav"]

ISSUES: list[str] = []


def issue(msg: str) -> None:
    if msg not in ISSUES:
        ISSUES.append(msg)
        print(f"  !! {msg}", file=sys.stderr)


def log(msg: str) -> None:
    print(f"[bench-audio] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# processes


class CmdError(RuntimeError):
    def __init__(self, cmd, rc, stderr):
        self.cmd, self.rc, self.stderr = cmd, rc, stderr
        super().__init__(f"command failed (rc={rc}): {' '.join(map(str, cmd))}\n{stderr.strip()}")


def run(cmd, check=True) -> subprocess.CompletedProcess:
    cmd = [str(c) for c in cmd]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise CmdError(cmd, p.returncode, p.stderr)
    return p


def timed(cmd) -> tuple[float, float]:
    """Wall time and CPU time (user+sys, incl. all threads) of one process."""
    cmd = [str(c) for c in cmd]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    p.stderr.close()
    if p.returncode != 0:
        raise CmdError(cmd, p.returncode, err)
    return wall, ru.ru_utime + ru.ru_stime


def duration_s(path: Path) -> float:
    out = run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
               "-of", "default=nw=1:nk=1", path]).stdout.strip()
    return float(out)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# --------------------------------------------------------------------------
# Ogg Opus inspection (payload bytes, packet durations, bandwidth)

_BW_SILK = {0: "NB", 1: "MB", 2: "WB"}


def _toc_info(pkt: bytes) -> tuple[float, str]:
    """(duration in ms, mode/bandwidth label) of one Opus packet (RFC 6716 3.1)."""
    if not pkt:
        return 0.0, "empty"
    toc = pkt[0]
    cfg = toc >> 3
    if cfg < 12:
        fs = [10, 20, 40, 60][cfg & 3]
        label = "SILK-" + _BW_SILK[cfg >> 2]
    elif cfg < 16:
        fs = [10, 20][cfg & 1]
        label = "Hyb-" + ("SWB" if cfg < 14 else "FB")
    else:
        fs = [2.5, 5, 10, 20][cfg & 3]
        label = "CELT-" + ["NB", "WB", "SWB", "FB"][(cfg - 16) >> 2]
    c = toc & 3
    n = 1 if c == 0 else 2 if c in (1, 2) else (pkt[1] & 0x3F if len(pkt) > 1 else 0)
    return fs * n, label


def ogg_opus_stats(path: Path) -> dict:
    data = path.read_bytes()
    pos, packets, cur = 0, [], bytearray()
    pages = 0
    while pos < len(data):
        if data[pos:pos + 4] != b"OggS":
            raise ValueError(f"{path}: bad Ogg page at {pos}")
        nseg = data[pos + 26]
        lacing = data[pos + 27:pos + 27 + nseg]
        body = pos + 27 + nseg
        pages += 1
        for lv in lacing:
            cur += data[body:body + lv]
            body += lv
            if lv < 255:
                packets.append(bytes(cur))
                cur = bytearray()
        pos = body
    head, audio = packets[0], packets[2:]
    if head[:8] != b"OpusHead":
        raise ValueError(f"{path}: first packet is not OpusHead")
    pre_skip = int.from_bytes(head[10:12], "little")
    in_rate = int.from_bytes(head[12:16], "little")
    durs, bws = [], {}
    for p in audio:
        d, label = _toc_info(p)
        durs.append(d)
        bws[label] = bws.get(label, 0) + 1
    main_bw = max(bws, key=bws.get) if bws else "-"
    return {
        "file_bytes": len(data),
        "payload_bytes": sum(len(p) for p in audio),
        "header_bytes": len(packets[0]) + len(packets[1]),
        "pages": pages,
        "packets": len(audio),
        "packet_ms_median": statistics.median(durs) if durs else 0,
        "bandwidth": main_bw,
        "bandwidth_share": round(bws.get(main_bw, 0) / max(1, len(audio)), 3),
        "pre_skip": pre_skip,
        "input_rate": in_rate,
        "channels": head[9],
    }


# --------------------------------------------------------------------------
# scoring


def read_mono16k(path: Path) -> np.ndarray:
    x, fs = sf.read(str(path), dtype="float64", always_2d=True)
    if fs != SR:
        raise ValueError(f"{path}: expected {SR} Hz, got {fs}")
    if x.shape[1] != 1:
        issue(f"{path.name}: expected mono, got {x.shape[1]} channels (averaged)")
    return x.mean(axis=1)


def find_lag(ref: np.ndarray, deg: np.ndarray, max_lag: int = SR // 4) -> int:
    """Lag (samples) by which deg trails ref, from cross-correlation."""
    n = min(len(ref), len(deg))
    c = correlate(deg[:n], ref[:n], mode="full", method="fft")
    mid = n - 1
    lo, hi = max(0, mid - max_lag), min(len(c), mid + max_lag + 1)
    return int(np.argmax(c[lo:hi]) + lo - mid)


def score(ref: np.ndarray, deg_path: Path) -> dict:
    deg = read_mono16k(deg_path)
    lag = find_lag(ref, deg)
    if lag > 0:
        deg = deg[lag:]
    elif lag < 0:
        deg = np.concatenate([np.zeros(-lag), deg])
    n = min(len(ref), len(deg))
    r, d = ref[:n], deg[:n]
    return {
        "pesq_wb": round(float(_pesq(SR, r, d, "wb")), 3),
        "stoi": round(float(_stoi(r, d, SR, extended=False)), 4),
        "lag": lag,
        "level_diff_db": round(float(10 * np.log10(np.mean(d ** 2) / max(np.mean(r ** 2), 1e-20))), 2),
        "len_diff": len(read_mono16k(deg_path)) - len(ref),
    }


# --------------------------------------------------------------------------
# the benchmark


class Bench:
    def __init__(self, args):
        self.a = args
        self.bin = Path(args.bin)
        self.fx = Path(args.fixtures)
        self.tmp = Path(args.tmpdir or tempfile.mkdtemp(prefix="bench-audio."))
        self.emit_flag = True  # --emit-preprocessed supported?
        self.ref_method = "--emit-preprocessed"

    def t(self, name: str) -> Path:
        return self.tmp / name

    # ---- tools --------------------------------------------------------
    def ours_encode(self, src, out, kbps, frame_ms=None, ref=None):
        cmd = [self.bin, "encode", src, out, "--kbps", kbps]
        if frame_ms is not None:
            cmd += ["--frame-ms", frame_ms]
        if ref is not None:
            cmd += ["--emit-preprocessed", ref]
        return cmd

    def opusenc(self, src, out, kbps, frame_ms=None):
        cmd = ["opusenc", "--bitrate", kbps, *OPUSENC_FLAGS]
        if frame_ms is not None:
            cmd += ["--framesize", frame_ms]
        return cmd + [src, out]

    def opusenc_reads(self, src: Path) -> bool:
        return run(self.opusenc(src, self.t("probe.opus"), SPEED_KBPS), check=False).returncode == 0

    def to_wav(self, src: Path, out: Path) -> Path:
        run(["ffmpeg", "-v", "error", "-y", "-i", src, "-c:a", "pcm_s16le", out])
        return out

    # ---- 1. speed -----------------------------------------------------
    def speed(self) -> list[dict]:
        rows = []
        reps = self.a.reps
        for name in SPEED_INPUTS:
            src = self.fx / name
            if not src.exists():
                issue(f"fixture missing: {src}")
                continue
            dur = duration_s(src)
            native = self.opusenc_reads(src)
            feed = src if native else self.to_wav(src, self.t(f"feed-{src.stem}.wav"))
            jobs = {"opusenc": self.opusenc(feed, self.t("sp-opusenc.opus"), SPEED_KBPS, SPEED_FRAME),
                    "ours": self.ours_encode(feed, self.t("sp-ours.opus"), SPEED_KBPS, SPEED_FRAME)}
            if not native:
                jobs["ours_orig"] = self.ours_encode(src, self.t("sp-ours-orig.opus"), SPEED_KBPS,
                                                     SPEED_FRAME)
            times = {k: [] for k in jobs}
            try:
                for k, cmd in jobs.items():  # warm-up (page cache, first-run effects)
                    timed(cmd)
                for _ in range(reps):  # interleaved so drift in load hits all alike
                    for k, cmd in jobs.items():
                        times[k].append(timed(cmd))
            except CmdError as e:
                issue(f"speed run failed on {name}: {e}")
                continue
            row = {"input": name, "duration_s": round(dur, 3), "native_for_opusenc": native,
                   "feed": "original" if native else "ffmpeg->WAV s16 (native rate/ch)"}
            for k, ts in times.items():
                wall = statistics.median(w for w, _ in ts)
                cpu = statistics.median(c for _, c in ts)
                row[k] = {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
                          "x_realtime": round(dur / wall, 1), "x_realtime_cpu": round(dur / cpu, 1),
                          "walls": [round(w, 4) for w, _ in ts]}
            row["ratio"] = round(row["ours"]["x_realtime"] / row["opusenc"]["x_realtime"], 2)
            row["ratio_cpu"] = round(row["ours"]["x_realtime_cpu"] / row["opusenc"]["x_realtime_cpu"], 2)
            if "ours_orig" in row:
                row["ratio_orig"] = round(row["ours_orig"]["x_realtime"] / row["opusenc"]["x_realtime"], 2)
            rows.append(row)
            log(f"speed {name}: ours {row['ours']['x_realtime']}x, opusenc {row['opusenc']['x_realtime']}x")
        return rows

    # ---- reference ----------------------------------------------------
    def make_ref(self, src: Path, stem: str) -> tuple[Path, Path]:
        """Preprocessed 16 kHz reference + our 12 kbps/default-frame encode."""
        ref, out = self.t(f"{stem}-ref.wav"), self.t(f"{stem}-ours-12-d.opus")
        if self.emit_flag:
            p = run(self.ours_encode(src, out, 12, ref=ref), check=False)
            if p.returncode == 0 and ref.exists():
                return ref, out
            issue("`loa-audio encode --emit-preprocessed REF.wav` failed: "
                  f"rc={p.returncode}: {p.stderr.strip()[:300]}; fallback reference = "
                  "encode --kbps 64 + decode --rate 16000")
            self.emit_flag = False
            self.ref_method = "encode --kbps 64 then decode --rate 16000 (fallback)"
        hi = self.t(f"{stem}-ours-64.opus")
        run(self.ours_encode(src, hi, 64))
        run([self.bin, "decode", hi, ref, "--rate", SR])
        run(self.ours_encode(src, out, 12))
        return ref, out

    # ---- 2+3. bytes and quality ----------------------------------------
    def quality(self, name: str) -> dict:
        src = self.fx / name
        stem = Path(name).stem
        dur = duration_s(src)
        per_min = 60.0 / dur
        ref_path, enc12 = self.make_ref(src, stem)
        p = run([self.bin, "info", enc12], check=False)
        info_out = (p.stdout + p.stderr).strip()
        if p.returncode != 0:
            issue(f"`loa-audio info {enc12.name}` failed (rc={p.returncode}): {info_out[:300]}")
        info = sf.info(str(ref_path))
        if info.samplerate != SR or info.channels != 1 or info.subtype != "PCM_16":
            issue(f"reference for {name} is {info.samplerate} Hz/{info.channels} ch/{info.subtype}, "
                  "expected 16000 Hz/1 ch/PCM_16")
        ref = read_mono16k(ref_path)
        ref_sha = sha(ref_path)
        if abs(len(ref) / SR - dur) > 0.05:
            issue(f"reference for {name} lasts {len(ref)/SR:.3f} s, source {dur:.3f} s")
        peak = float(np.max(np.abs(ref)))
        res = {"input": name, "duration_s": round(dur, 3), "ref_method": self.ref_method,
               "ref_sha256_16": ref_sha, "info_12kbps": info_out, "ref_peak_dbfs": round(20 * np.log10(max(peak, 1e-9)), 2),
               "ours": {}, "opusenc": {}, "opusenc_src": {}, "ours_frames": {}, "opusenc_frames": {}}

        def enc_ours(kbps, frame):
            tag = f"{stem}-ours-{kbps}-{frame}"
            out, dec = self.t(f"{tag}.opus"), self.t(f"{tag}.wav")
            rcheck = self.t(f"{tag}-ref.wav") if self.emit_flag else None
            run(self.ours_encode(src, out, kbps, frame_ms=frame, ref=rcheck))
            if rcheck is not None and sha(rcheck) != ref_sha:
                issue(f"preprocessed reference differs between encodes ({name}, {kbps} kbit/s, {frame} ms)")
            run([self.bin, "decode", out, dec, "--rate", SR])
            return self.measure(out, dec, ref, per_min, kbps, frame)

        def enc_opusenc(kbps, frame, inp=ref_path, tag_extra=""):
            tag = f"{stem}-opusenc{tag_extra}-{kbps}-{frame}"
            out, dec = self.t(f"{tag}.opus"), self.t(f"{tag}.wav")
            run(self.opusenc(inp, out, kbps, frame_ms=frame))
            if inp is not ref_path:  # bytes only
                return self.measure(out, None, None, per_min, kbps, frame)
            run(["opusdec", "--quiet", "--rate", SR, out, dec])
            return self.measure(out, dec, ref, per_min, kbps, frame)

        for kbps in BITRATES:
            res["ours"][kbps] = enc_ours(kbps, 20)
            res["opusenc"][kbps] = enc_opusenc(kbps, 20)
            res["opusenc_src"][kbps] = enc_opusenc(kbps, 20, inp=src, tag_extra="-src")
            log(f"{name} {kbps:>2} kbit/s: ours PESQ {res['ours'][kbps]['pesq_wb']}, "
                f"opusenc {res['opusenc'][kbps]['pesq_wb']}")
        for frame in FRAMES:
            res["ours_frames"][frame] = {}
            for kbps in BITRATES:
                if frame == 20:
                    res["ours_frames"][frame][kbps] = res["ours"][kbps]
                else:
                    res["ours_frames"][frame][kbps] = enc_ours(kbps, frame)
            res["opusenc_frames"][frame] = (res["opusenc"][12] if frame == 20
                                            else enc_opusenc(12, frame))
        log(f"{name}: frame sweep done")

        # MP3 48 kbit/s from the same reference, decoded back to 16 kHz
        mp3, mp3dec = self.t(f"{stem}-mp3.mp3"), self.t(f"{stem}-mp3.wav")
        run(["ffmpeg", "-v", "error", "-y", "-i", ref_path, "-c:a", "libmp3lame",
             "-b:a", f"{MP3_KBPS}k", "-ac", "1", mp3])
        run(["ffmpeg", "-v", "error", "-y", "-i", mp3, "-ar", SR, "-ac", "1",
             "-c:a", "pcm_s16le", mp3dec])
        m = score(ref, mp3dec)
        m.update({"file_bytes": mp3.stat().st_size,
                  "bytes_per_min": round(mp3.stat().st_size * per_min)})
        res["mp3_48k"] = m

        # lowest bitrate of ours whose PESQ-WB >= MP3-48k's: coarse per frame size from the 6-24 sweeps, then
        # refined at the default frame size in MATCH_STEP kbit/s steps (and above 24 kbit/s if needed)
        res["lowest_kbps_matching_mp3_by_frame"] = {}
        for frame in FRAMES:
            match = [k for k in BITRATES if res["ours_frames"][frame][k]["pesq_wb"] >= m["pesq_wb"]]
            res["lowest_kbps_matching_mp3_by_frame"][frame] = match[0] if match else None
        tried = {k: res["ours_frames"][DEFAULT_FRAME][k] for k in BITRATES}
        coarse = res["lowest_kbps_matching_mp3_by_frame"][DEFAULT_FRAME]
        if coarse is None:
            cands = MATCH_ABOVE
        else:
            below = max([k for k in BITRATES if k < coarse], default=BITRATES[0])
            cands = list(range(below + MATCH_STEP, coarse, MATCH_STEP))
        found = coarse
        for kbps in cands:
            tried[kbps] = enc_ours(kbps, DEFAULT_FRAME)
            if tried[kbps]["pesq_wb"] >= m["pesq_wb"]:
                found = kbps
                break
        res["mp3_match"] = {"frame_ms": DEFAULT_FRAME, "kbps": found,
                            "tried": {k: {"pesq_wb": v["pesq_wb"], "stoi": v["stoi"],
                                          "bytes_per_min": v["bytes_per_min"]} for k, v in sorted(tried.items())}}
        log(f"{name}: MP3 {MP3_KBPS}k PESQ-WB {m['pesq_wb']} matched at {found} kbit/s ({DEFAULT_FRAME} ms)")

        # bytes/min at equal PESQ (target = ours 20 ms @ 12 kbit/s), ours vs opusenc, both 20 ms,
        # interpolated along the 6-24 kbit/s sweeps
        res["equal_pesq_bytes"] = {
            "ours": interp_bytes(res["ours"], res["ours"][12]["pesq_wb"]),
            "opusenc": interp_bytes(res["opusenc"], res["ours"][12]["pesq_wb"])}

        # frame sizes: bytes/min at equal PESQ (target = ours 20 ms @ 12 kbit/s),
        # interpolated along each frame size's bitrate sweep
        target = res["ours"][12]["pesq_wb"]
        res["frame_equal_pesq_target"] = target
        res["frame_bytes_at_target"] = {f: interp_bytes(res["ours_frames"][f], target) for f in FRAMES}
        cands = {f: v for f, v in res["frame_bytes_at_target"].items() if v is not None}
        res["cheapest_frame_at_equal_pesq"] = min(cands, key=cands.get) if cands else None
        return res

    def measure(self, out: Path, dec: Path | None, ref, per_min, kbps, frame) -> dict:
        st = ogg_opus_stats(out)
        r = {"bytes": st["file_bytes"],
             "bytes_per_min": round(st["file_bytes"] * per_min),
             "payload_bytes_per_min": round(st["payload_bytes"] * per_min),
             "kbps_actual": round(st["payload_bytes"] * 8 * per_min / 60 / 1000, 2),
             "packet_ms": st["packet_ms_median"], "bandwidth": st["bandwidth"],
             "bandwidth_share": st["bandwidth_share"], "pre_skip": st["pre_skip"],
             "pages": st["pages"], "header_bytes": st["header_bytes"]}
        if frame is not None and st["packet_ms_median"] != frame:
            issue(f"{out.name}: asked for {frame} ms frames, packets last {st['packet_ms_median']} ms")
        if dec is not None:
            r.update(score(ref, dec))
        return r


def interp_bytes(sweep: dict, target: float):
    """Bytes/min at PESQ-WB = target, linear along a bitrate sweep (None if outside it)."""
    pts = sorted((v["pesq_wb"], v["bytes_per_min"]) for v in sweep.values())
    q = np.array([p for p, _ in pts])
    b = np.array([x for _, x in pts])
    if target < q.min() or target > q.max():
        return None
    return int(round(float(np.interp(target, q, b))))


# --------------------------------------------------------------------------
# report


def machine_info() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def versions(binpath: str) -> dict:
    def first(cmd):
        try:
            p = run(cmd, check=False)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    return {"loa-audio": first([binpath, "--version"]),
            "opusenc": first(["opusenc", "--version"]),
            "ffmpeg": first(["ffmpeg", "-version"]),
            "python": platform.python_version(),
            "numpy": np.__version__}


def fmt_table(headers, rows, aligns=None) -> str:
    cols = list(zip(*([headers] + rows))) if rows else [[h] for h in headers]
    widths = [max(len(str(c)) for c in col) for col in cols]
    aligns = aligns or ["<"] + [">"] * (len(headers) - 1)
    def line(vals):
        return "  ".join(f"{str(v):{a}{w}}" for v, a, w in zip(vals, aligns, widths)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def report(meta, speed, qual) -> str:
    L = []
    L.append(f"loa-audio benchmark  {meta['date']}")
    L.append(f"machine: {meta['machine']['nproc']} cores, {meta['machine']['cpu']}, "
             f"load avg at start {meta['load_start']}, at end {meta['load_end']}")
    L.append(f"loa-audio: {meta['versions']['loa-audio']} ({meta['bin']})")
    L.append(f"opusenc:   {meta['versions']['opusenc']}; flags: --bitrate N "
             f"{' '.join(OPUSENC_FLAGS)} [--framesize N]")
    L.append(f"ffmpeg:    {meta['versions']['ffmpeg']}")
    L.append(f"reference: {meta['ref_method']}")
    if speed:
        L.append("")
        L.append(f"1. Encode speed at {SPEED_KBPS} kbit/s, {SPEED_FRAME} ms (x realtime = audio s / wall s of the whole "
                 f"process, median of {meta['reps']} runs after 1 warm-up; CPU = user+sys)")
        rows = []
        for r in speed:
            rows.append([r["input"], f"{r['duration_s']:.2f}", r["ours"]["x_realtime"],
                         r["opusenc"]["x_realtime"], f"{r['ratio']:.2f}",
                         f"{r['ratio_cpu']:.2f}",
                         r["ours_orig"]["x_realtime"] if "ours_orig" in r else "=",
                         f"{r['ratio_orig']:.2f}" if "ratio_orig" in r else "="])
        L.append(fmt_table(["input", "audio s", "ours xRT", "opusenc xRT", "ratio", "ratio CPU",
                            "ours xRT orig", "ratio orig"], rows))
        L.append("   Both tools get the same file. opusenc reads only PCM WAV/FLAC, so for MP3/M4A/Ogg "
                 "Vorbis/mu-law the shared\n   file is that input decoded beforehand by ffmpeg to 16-bit WAV "
                 "(native rate/channels, decode time not counted);\n   'orig' = ours reading the original "
                 "compressed file (includes its decoding) vs the same opusenc time.")
    for q in qual:
        L.append("")
        L.append(f"2+3. {q['input']} ({q['duration_s']:.2f} s; reference = preprocessed 16 kHz mono, "
                 f"peak {q['ref_peak_dbfs']} dBFS). Bytes per audio minute (whole file), PESQ-WB, STOI")
        rows = []
        for k in BITRATES:
            o, e, s = q["ours"][k], q["opusenc"][k], q["opusenc_src"][k]
            rows.append([f"{k}", o["bytes_per_min"], e["bytes_per_min"],
                         f"{o['bytes_per_min']/e['bytes_per_min']:.3f}",
                         f"{o['payload_bytes_per_min']/e['payload_bytes_per_min']:.3f}",
                         s["bytes_per_min"],
                         f"{o['pesq_wb']:.3f}", f"{e['pesq_wb']:.3f}",
                         f"{o['stoi']:.3f}", f"{e['stoi']:.3f}",
                         f"{o['bandwidth']}/{e['bandwidth']}", f"{o['lag']}/{e['lag']}"])
        m = q["mp3_48k"]
        rows.append([f"MP3 {MP3_KBPS}", m["bytes_per_min"], "", "", "", "",
                     f"{m['pesq_wb']:.3f}", "", f"{m['stoi']:.3f}", "", "", f"{m['lag']}"])
        L.append(fmt_table(["kbit/s", "ours B/min", "opusenc B/min", "ratio", "ratio payload",
                            "opusenc(src) B/min", "PESQ ours", "PESQ opusenc", "STOI ours",
                            "STOI opusenc", "bw ours/opusenc", "lag"], rows))
        mm = q["mp3_match"]
        lm = q["lowest_kbps_matching_mp3_by_frame"]
        hit = mm["tried"].get(mm["kbps"]) if mm["kbps"] else None
        L.append(f"   lowest bitrate of ours ({mm['frame_ms']} ms) with PESQ-WB >= MP3 {MP3_KBPS}k ({m['pesq_wb']:.3f}): "
                 + (f"{mm['kbps']} kbit/s (PESQ-WB {hit['pesq_wb']:.3f}, STOI {hit['stoi']:.3f}, "
                    f"{hit['bytes_per_min']} B/min = {hit['bytes_per_min'] / m['bytes_per_min']:.0%} of MP3's)"
                    if hit else f"none up to {max(mm['tried'])} kbit/s")
                 + "   [6-24 sweep by frame size: "
                 + ", ".join(f"{f} ms: " + (f"{lm[f]}" if lm[f] else "none") for f in FRAMES) + "]")
        L.append(f"   searched at {mm['frame_ms']} ms (kbit/s: PESQ-WB): "
                 + ", ".join(f"{k}: {v['pesq_wb']:.2f}" for k, v in mm["tried"].items()))
        eq = q["equal_pesq_bytes"]
        L.append(f"   bytes/min at equal PESQ-WB {q['ours'][12]['pesq_wb']:.3f} (20 ms, interpolated): ours {eq['ours']}, "
                 f"opusenc {eq['opusenc'] if eq['opusenc'] is not None else 'n/a'}"
                 + (f", ratio {eq['ours']/eq['opusenc']:.3f}" if eq['opusenc'] else ""))
        rows = []
        for f in FRAMES:
            o, e = q["ours_frames"][f][12], q["opusenc_frames"][f]
            bt = q["frame_bytes_at_target"][f]
            rows.append([f"{f}", o["bytes_per_min"], o["payload_bytes_per_min"], e["bytes_per_min"],
                         f"{o['bytes_per_min']/e['bytes_per_min']:.3f}",
                         f"{o['pesq_wb']:.3f}", f"{e['pesq_wb']:.3f}",
                         f"{o['stoi']:.3f}", f"{e['stoi']:.3f}", bt if bt is not None else "n/a"])
        lv = lambda key: [q[key][k]["level_diff_db"] for k in BITRATES]
        L.append(f"   decoded minus reference level (dB, 6..24 kbit/s): ours {lv('ours')}, "
                 f"opusenc {lv('opusenc')}, MP3 {m['level_diff_db']}")
        L.append("")
        L.append(f"   Frame size at 12 kbit/s (opusenc --framesize N on the same reference)")
        L.append(fmt_table(["ms", "ours B/min", "ours payload", "opusenc B/min", "ratio",
                            "PESQ ours", "PESQ opusenc", "STOI ours", "STOI opusenc",
                            "ours B/min @PESQ=" + f"{q['frame_equal_pesq_target']:.3f}"], rows))
        cf = q["cheapest_frame_at_equal_pesq"]
        L.append(f"   cheapest frame size at equal PESQ-WB ({q['frame_equal_pesq_target']:.3f}, interpolated "
                 f"over 6-24 kbit/s sweeps): " + (f"{cf} ms" if cf else "n/a"))
        sweep = []
        for f in FRAMES[1:]:
            sweep.append(f"{f} ms: " + ", ".join(
                f"{k}k {q['ours_frames'][f][k]['bytes_per_min']}B/{q['ours_frames'][f][k]['pesq_wb']:.2f}"
                for k in BITRATES))
        L.append("   sweep (B/min / PESQ): " + "\n                         ".join(sweep))
    L.append("")
    L += summary(speed, qual)
    L.append("")
    if ISSUES:
        L.append("Issues found:")
        L += [f"  - {i}" for i in ISSUES]
    else:
        L.append("Issues found: none")
    return "\n".join(L)


def summary(speed, qual) -> list[str]:
    """The figures the goals are stated in, one line each."""
    L = ["Summary against the goals"]
    if speed:
        ratios = sorted(r["ratio"] for r in speed)
        low, med = ratios[0], statistics.median(ratios)
        L.append(f"  speed: ours / opusenc x realtime = {low:.2f}..{ratios[-1]:.2f} (median {med:.2f}) over "
                 f"{len(ratios)} inputs; goal >= 1.50: {'met' if low >= 1.5 else 'NOT met'}")
    if qual:
        rb = [q["ours"][k]["bytes_per_min"] / q["opusenc"][k]["bytes_per_min"] for q in qual for k in BITRATES]
        L.append(f"  size: ours / opusenc bytes per minute, 6-24 kbit/s, 20 ms = {min(rb):.3f}..{max(rb):.3f}; "
                 f"goal at most 5 % above opusenc: {'met' if max(rb) <= 1.05 else 'NOT met'}"
                 + (" (ours is smaller at every point)" if max(rb) < 1 else ""))
        for q in qual:
            mm = q["mp3_match"]
            L.append(f"  MP3 {MP3_KBPS}k match ({q['input']}): PESQ-WB {q['mp3_48k']['pesq_wb']:.3f} reached at "
                     + (f"{mm['kbps']} kbit/s" if mm["kbps"] else "no bitrate tried")
                     + f" ({mm['frame_ms']} ms frames)")
        for q in qual:
            f60, f20 = q["ours_frames"][60][12], q["ours_frames"][20][12]
            L.append(f"  frames ({q['input']}, 12 kbit/s): 60 ms vs 20 ms: bytes {f60['bytes_per_min'] / f20['bytes_per_min'] - 1:+.1%}, "
                     f"PESQ-WB {f60['pesq_wb'] - f20['pesq_wb']:+.3f}; cheapest at equal PESQ: "
                     f"{q['cheapest_frame_at_equal_pesq']} ms")
    return L


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="path to the loa-audio binary")
    ap.add_argument("--fixtures", required=True, help="directory with the audio fixtures")
    ap.add_argument("--tmpdir", help="scratch directory (default: a new mkdtemp dir)")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per tool and input (median)")
    ap.add_argument("--json", action="store_true", help="also print one JSON object (last line)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    a = ap.parse_args()

    for tool in ("ffmpeg", "ffprobe", "opusenc", "opusdec"):
        if shutil.which(tool) is None:
            print(f"bench-audio: {tool} not found on PATH", file=sys.stderr)
            return 2
    b = Bench(a)
    meta = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine_info(), "versions": versions(a.bin), "bin": a.bin,
            "reps": a.reps, "opusenc_flags": OPUSENC_FLAGS}
    meta["load_start"] = meta["machine"]["loadavg"]
    t0 = time.time()
    speed = [] if a.skip_speed else b.speed()  # timing first, nothing else running
    qual = [] if a.skip_quality else [b.quality(n) for n in QUALITY_INPUTS]
    meta["ref_method"] = b.ref_method
    meta["load_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["elapsed_s"] = round(time.time() - t0, 1)
    print(report(meta, speed, qual))
    print(f"(elapsed {meta['elapsed_s']} s)")
    if a.json:
        print(json.dumps({"meta": meta, "speed": speed, "quality": qual, "issues": ISSUES},
                         separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
