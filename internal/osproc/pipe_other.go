//go:build !linux

package osproc

import "os"

func growPipe(*os.File) {}
