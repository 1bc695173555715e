"""Transcription job: audio decoding, a Whisper engine on OpenVINO, output formats, the job function."""
