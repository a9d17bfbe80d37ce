package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/eventio"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// importChildEnv makes the test binary run the dialtrap command line it holds (arguments
// separated by newlines), with transactions of importChildBatch events (see TestMain).
const (
	importChildEnv   = "DIALTRAP_TEST_IMPORT_CHILD"
	importChildBatch = 2000
)

// writeLog writes n events as a JSON log.
func writeLog(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := eventio.NewWriter(bufio.NewWriter(f), eventio.JSONLines)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		e := &event.Event{AppName: event.AppName, AppVersion: "test",
			Timestamp: event.FormatTime(start.Add(time.Duration(i) * time.Second)),
			UUID:      fmt.Sprintf("00000000-0000-4000-8000-%012d", i), NodeID: "0190f4a2-0000-7000-8000-000000000001",
			CollectedMethod: event.Responsive, Transport: event.UDP, SourceIP: fmt.Sprintf("198.51.100.%d", i%200),
			SourcePort: 5070, DestinationIP: "192.0.2.1", DestinationPort: 5060, CalledNumber: fmt.Sprintf("0046812%06d", i%3000),
			SIPMethod: "INVITE", SIPUserAgent: "friendly-scanner", SIPMessage: "INVITE sip:100@192.0.2.1 SIP/2.0\r\n\r\n"}
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

func countEvents(t *testing.T, db string) int64 {
	t.Helper()
	st, err := sqlite.OpenReadOnly(context.Background(), db)
	if err != nil {
		return 0 // not made yet
	}
	defer st.Close()
	n, err := st.CountEvents(context.Background())
	if err != nil {
		return 0
	}
	return n
}

// An import killed with SIGKILL keeps the transactions it committed; run again, it adds the
// rest, counts the kept ones as already stored, and the store ends as after one whole import.
func TestImportResumesAfterKill(t *testing.T) {
	const n = 30_000
	dir := t.TempDir()
	in, db, whole := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "dialtrap.db"), filepath.Join(dir, "whole.db")
	writeLog(t, in, n)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), importChildEnv+"="+strings.Join([]string{"import", "-f", db, in}, "\n"))
	var childOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &childOut, &childOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Killed once it has committed a few transactions, long before its end.
	deadline := time.Now().Add(time.Minute)
	for countEvents(t, db) < 2*importChildBatch && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	kept := countEvents(t, db)
	if kept == 0 || kept >= n || kept%importChildBatch != 0 {
		t.Fatalf("after the kill %d events are stored, want whole transactions of %d short of %d\n%s", kept, importChildBatch, n, childOut.String())
	}

	var out, errOut bytes.Buffer
	if code := runImport([]string{"-f", db, in}, &out, &errOut); code != exitOK {
		t.Fatalf("import again: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	want := fmt.Sprintf("%d records, %d events added, %d already stored, 0 skipped", n, n-kept, kept)
	if !strings.Contains(out.String(), want) {
		t.Errorf("import again said %q, want %q", out.String(), want)
	}
	out.Reset()
	if code := runImport([]string{"-f", whole, in}, &out, &errOut); code != exitOK {
		t.Fatalf("whole import: exit %d\n%s", code, errOut.String())
	}
	a, b := storeSummary(t, db), storeSummary(t, whole)
	if a != b {
		t.Errorf("resumed store:\n%s\nwhole import:\n%s", a, b)
	}
}

// storeSummary is what a store holds, in a few sums.
func storeSummary(t *testing.T, db string) string {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.OpenReadOnly(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var b strings.Builder
	n, err := st.CountEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "events %d\n", n)
	for _, k := range []string{"198.51.100.7", "0046812000007"} {
		a, ok, err := st.IP(ctx, k)
		if k[0] == '0' {
			a, ok, err = st.Number(ctx, k)
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %v %d %s %s\n", k, ok, a.Count, a.FirstSeen, a.LastSeen)
	}
	m, err := st.MatchNumbers(ctx, "+46812000007")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "national matches %d\n", len(m))
	return b.String()
}

// someEvents is an eventReader of n events, one a minute from 10:00.
type someEvents int

func (n someEvents) Events(_ context.Context, fn func(*event.Event) error) error {
	for i := range int(n) {
		ts := time.Date(2026, 11, 30, 10, i, 0, 0, time.UTC)
		e := &event.Event{AppName: event.AppName, UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			Timestamp: event.FormatTime(ts), SourceIP: "192.0.2.1", Transport: event.UDP}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (n someEvents) CountEvents(context.Context) (int64, error) { return int64(n), nil }

// Export draws the progress bar on a terminal (the share of the store's events read, the
// events written) and clears it at the end; elsewhere it writes nothing but the events.
func TestExportProgress(t *testing.T) {
	for _, tty := range []bool{true, false} {
		var bar, out strings.Builder
		p := newProgress(&bar, "export")
		p.tty = tty
		err := writeExport(context.Background(), someEvents(3), eventio.JSONLines, "-", "2026-11-30 10:01:00", &out, p)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out.String(), "\n"); n != 2 {
			t.Errorf("tty %v: %d events exported, want the 2 since 10:01", tty, n)
		}
		want := ""
		if tty {
			want = "\rexport  33% [==========                    ] 0 events\r\x1b[K" // drawn at the first event, then cleared
		}
		if bar.String() != want {
			t.Errorf("tty %v: bar %q, want %q", tty, bar.String(), want)
		}
	}
}
