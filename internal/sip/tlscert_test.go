package sip

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A self-signed key that does not match its certificate (an older version started twice at
// once could leave one) is replaced with a warning; the operator's own mismatched files are
// an error, never replaced.
func TestMismatchedSelfSignedPairIsReplaced(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b} {
		if _, err := TLSConfig("", "", dir, nil); err != nil {
			t.Fatal(err)
		}
	}
	// a's certificate with b's key.
	otherKey, err := os.ReadFile(filepath.Join(b, SelfSignedKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, SelfSignedKey), otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	if _, err := TLSConfig("", "", a, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatalf("mismatched self-signed pair: %v", err)
	}
	if !strings.Contains(logs.String(), "making a new pair") {
		t.Errorf("no warning: %q", logs.String())
	}
	// Loads without a warning from now on.
	logs.Reset()
	if _, err := TLSConfig("", "", a, slog.New(slog.NewTextHandler(&logs, nil))); err != nil || logs.Len() != 0 {
		t.Errorf("after the repair: %v %q", err, logs.String())
	}
	// The operator's files: an error that says what to check.
	_, err = TLSConfig(filepath.Join(a, SelfSignedCert), filepath.Join(b, SelfSignedKey), "", nil)
	if err == nil || !strings.Contains(err.Error(), "-t/-k") {
		t.Errorf("operator's mismatched pair: %v", err)
	}
}
