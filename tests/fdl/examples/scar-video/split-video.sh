#!/bin/bash
ffmpeg -i "$INPUT_FILE_PATH" -r 1 "$TMP_OUTPUT_DIR/frame-%03d.png"
