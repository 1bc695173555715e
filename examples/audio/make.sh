#!/usr/bin/env bash
# Regenerates the demo clips (espeak-ng and sox from Debian's packages).
set -euo pipefail
cd "$(dirname "$0")"
t=$(mktemp -d)
espeak-ng -v en-us -s 150 -w "$t/c1.wav" "Mister Quilter is the apostle of the middle classes, and we are glad to welcome his gospel."
espeak-ng -v en-gb -s 140 -w "$t/c2.wav" "The archive holds four thousand hours of recorded calls from the year two thousand and twenty four."
espeak-ng -v en+m3 -s 160 -w "$t/c3.wav" "Please transcribe every file, write the subtitles, and report any file that fails."
sox "$t/c1.wav" -r 16000 -c 1 quilter.wav
sox "$t/c2.wav" -r 22050 -c 1 archive.flac
sox "$t/c3.wav" -r 16000 -c 1 subtitles.ogg
rm -r "$t"
