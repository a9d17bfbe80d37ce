package jsonlog

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
)

func TestAppendsOneLinePerEvent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "dialtrap_json.log")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("{\"earlier\":\"line\"}\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, event.CompatNone)
	if err != nil {
		t.Fatal(err)
	}
	var batch []*event.Event
	for i := range 3 {
		batch = append(batch, &event.Event{AppName: event.AppName, UUID: fmt.Sprint(i),
			SIPMessage: "OPTIONS sip:1@x SIP/2.0\r\nTo: <sip:1@x>\r\n\r\n"})
	}
	if err := l.Write(context.Background(), batch[:2]); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(context.Background(), batch[2:]); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var lines []map[string]any
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 4 || lines[0]["earlier"] != "line" {
		t.Fatalf("got %d lines, want the earlier one kept and 3 appended", len(lines))
	}
	for i, m := range lines[1:] {
		if m["event_uuid"] != fmt.Sprint(i) || m["sip_message"] != batch[i].SIPMessage {
			t.Errorf("line %d = %v", i+1, m)
		}
	}
}

func TestCompatIPPort(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dialtrap_json.log")
	l, err := Open(path, event.CompatIPPort)
	if err != nil {
		t.Fatal(err)
	}
	batch := []*event.Event{
		{AppName: event.AppName, SourceIP: "192.0.2.7", SourcePort: 5070, DestinationIP: "198.51.100.1", DestinationPort: 5060},
		{AppName: event.AppName, SourceIP: "2001:db8::7", SourcePort: 5070, DestinationIP: "2001:db8::1", DestinationPort: 5060},
	}
	if err := l.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, e := range batch {
		want, _ = e.AppendJSONCompat(want, event.CompatIPPort)
		want = append(want, '\n')
	}
	if string(b) != string(want) {
		t.Errorf("log\n%s\nwant\n%s", b, want)
	}
	for _, s := range []string{`"source_ip":"192.0.2.7:5070","destination_ip":"198.51.100.1:5060"`, `"source_ip":"[2001:db8::7]:5070","destination_ip":"[2001:db8::1]:5060"`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("log lacks %s:\n%s", s, b)
		}
	}
}

func TestOpenErrorSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(dir, event.CompatNone) // a directory, not a file
	if err == nil {
		t.Fatal("opened a directory as the JSON log")
	}
}

// /dev/full fails every write with ENOSPC: the error must reach the hub (which keeps the
// batch and retries) rather than vanish.
func TestFullDiskIsAnError(t *testing.T) {
	l, err := Open("/dev/full", event.CompatNone)
	if err != nil {
		t.Skipf("no /dev/full here: %v", err)
	}
	defer l.f.Close()
	err = l.Write(context.Background(), []*event.Event{{AppName: event.AppName}})
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("write to a full device: %v", err)
	}
}

// A line cut short by kill -9 is removed when the log is opened again; whole lines stay.
func TestOpenRepairsCutLastLine(t *testing.T) {
	for _, c := range []struct{ before, after string }{
		{"{\"a\":1}\n{\"b\":2}\n{\"app_na", "{\"a\":1}\n{\"b\":2}\n"},
		{"{\"a\":1}\n", "{\"a\":1}\n"},
		{"{\"cut", ""},
		{"", ""},
		{strings.Repeat("x", 100<<10) + "\n" + strings.Repeat("y", 70<<10), strings.Repeat("x", 100<<10) + "\n"},
	} {
		path := filepath.Join(t.TempDir(), "j.log")
		if err := os.WriteFile(path, []byte(c.before), 0o640); err != nil {
			t.Fatal(err)
		}
		l, err := Open(path, event.CompatNone)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		got, _ := os.ReadFile(path)
		if string(got) != c.after {
			t.Errorf("after open: %.40q (%d bytes), want %.40q (%d bytes)", got, len(got), c.after, len(c.after))
		}
	}
}
