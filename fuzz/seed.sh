#!/usr/bin/env bash
# Seeds the fuzz corpora from the shared audio fixtures (see docs/fuzzing.md).
#
# usage: fuzz/seed.sh [LOA_AUDIO_BIN]   (default: target/release/loa-audio; needs ffmpeg)
# env:   LOA_FIXTURES=dir audio fixtures (default: ../shared/fixtures/audio from the repo root)
#
# audio_decode gets every fixture whole plus 1.5 s cuts of the same speech in each format (small seeds keep
# libFuzzer fast; the whole files keep the real headers); ogg_opus_stream gets short Ogg Opus files made by
# `loa-audio encode` at several bitrates and frame sizes, plus one opusenc file if opus-tools is installed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fixtures=${LOA_FIXTURES:-$root/../shared/fixtures/audio}
bin=${1:-$root/target/release/loa-audio}
dec="$root/fuzz/corpus/audio_decode"
ogg="$root/fuzz/corpus/ogg_opus_stream"
[ -d "$fixtures" ] || { echo "seed: fixtures not found: $fixtures" >&2; exit 2; }
[ -x "$bin" ] || { echo "seed: loa-audio binary not found: $bin (cargo build --release -p loa-audio)" >&2; exit 2; }
mkdir -p "$dec" "$ogg"

cp -f --no-preserve=mode "$fixtures"/* "$dec"/
src="$fixtures/bulletin-vi-22k-mono.wav"
ff() { ffmpeg -v error -y -ss 3 -t 1.5 -i "$src" "$@"; }
ff -c:a pcm_s16le "$dec/cut-22k.wav"
ff -ar 8000 -c:a pcm_mulaw "$dec/cut-mulaw.wav"
ff -ar 8000 -c:a pcm_alaw "$dec/cut-alaw.wav"
ff -ar 11025 -ac 2 -c:a pcm_f32le -t 0.7 "$dec/cut-f32-stereo.wav"
ff -ar 44100 -ac 2 -c:a libmp3lame -b:a 32k "$dec/cut.mp3"
ff -ar 48000 -ac 2 -c:a aac -b:a 48k "$dec/cut.m4a"
ff -c:a flac "$dec/cut.flac"
ff -c:a libvorbis -q:a 0 "$dec/cut-vorbis.ogg"
ff -c:a pcm_s16le "$ogg/cut.wav"

for spec in "6 20" "12 60" "24 40"; do
  set -- $spec
  "$bin" encode "$ogg/cut.wav" "$ogg/cut-$1k-$2ms.opus" --kbps "$1" --frame-ms "$2" --title "Thông báo" >/dev/null
done
rm "$ogg/cut.wav"
cp "$ogg/cut-12k-60ms.opus" "$dec/cut.opus"
if command -v opusenc >/dev/null; then
  ff -c:a pcm_s16le "$dec/cut-tmp.wav"
  opusenc --quiet --bitrate 16 "$dec/cut-tmp.wav" "$ogg/cut-opusenc.opus"
  rm "$dec/cut-tmp.wav"
fi
echo "seed: $(ls "$dec" | wc -l) files in $dec, $(ls "$ogg" | wc -l) in $ogg"
