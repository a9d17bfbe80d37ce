//go:build !opendht

package main

import (
	"bytes"
	"strings"
	"testing"
)

// The default build has no OpenDHT bridge: --opendht is a usage error that says how to get
// one, from the command line and the environment.
func TestOpenDHTRefusedWithoutTheTag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-R", "--opendht", "--data-dir", t.TempDir()}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "-tags opendht") {
		t.Errorf("--opendht: exit %d, %q", code, errb.String())
	}
}
