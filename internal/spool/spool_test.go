package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

func records(from, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, from+i, strings.Repeat("x", 100))
	}
	return out
}

func drain(t *testing.T, s *Spool, ack bool) []string {
	t.Helper()
	var got []string
	for {
		r, ok, err := s.TryNext()
		if err != nil {
			t.Logf("TryNext: %v", err)
			return got
		}
		if !ok {
			return got
		}
		got = append(got, string(r.Data))
		if ack {
			if err := s.Ack(r); err != nil {
				t.Fatal(err)
			}
		} else {
			s.Release(r)
		}
	}
}

func TestNextWaitsForAnAppend(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on an empty spool: %v, want the deadline", err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		s.Append(records(0, 1))
	}()
	r, err := s.Next(context.Background())
	if err != nil || string(r.Data) != string(records(0, 1)[0]) {
		t.Fatalf("Next = %q, %v", r.Data, err)
	}
	s.Close()
	if _, err := s.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

func TestSpoolKeepsWhatWasNotAckedAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(records(0, 10)); err != nil {
		t.Fatal(err)
	}
	// Ack the even records only.
	for i := range 10 {
		r, err := s.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := s.Ack(r); err != nil {
				t.Fatal(err)
			}
		} else {
			s.Release(r)
		}
	}
	if p := s.Stats().Pending; p != 5 {
		t.Fatalf("pending = %d, want 5", p)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if p := s.Stats().Pending; p != 5 {
		t.Fatalf("pending after reopen = %d, want 5", p)
	}
	got := drain(t, s, true)
	want := records(0, 10)
	if len(got) != 5 {
		t.Fatalf("got %d records after reopen, want 5: %q", len(got), got)
	}
	for i, g := range got {
		if g != string(want[2*i+1]) {
			t.Errorf("record %d = %s, want %s", i, g, want[2*i+1])
		}
	}
	// Everything acked: the old segment and its ack file are gone.
	s.Append(records(10, 1)) // forces no rotation; only checks the old files
	files, _ := filepath.Glob(filepath.Join(dir, "*"+segExt))
	if len(files) != 1 {
		t.Errorf("segments on disk after all acked: %v, want only the current one", files)
	}
}

func TestSpoolCutsATornRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(records(0, 3)); err != nil {
		t.Fatal(err)
	}
	seg := s.path(s.segs[0].seq, segExt)
	s.Close()
	// A crash in the middle of the next append: part of a record, no newline.
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"n":3,"pa`)
	f.Close()
	// And a cut ack entry (2 of 4 bytes).
	os.WriteFile(strings.TrimSuffix(seg, segExt)+ackExt, []byte{0, 0}, 0o600)

	var logs testutil.SyncBuffer
	s, err = Open(dir, Options{MaxBytes: 1 << 20, Name: "test spool", Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st.Torn != 1 || st.Pending != 3 {
		t.Errorf("stats after the repair %+v, want 1 torn, 3 pending", st)
	}
	if !strings.Contains(logs.String(), "test spool: cut records torn by a crash") {
		t.Errorf("no warning about the torn record:\n%s", logs.String())
	}
	got := drain(t, s, true)
	if len(got) != 3 {
		t.Fatalf("got %d records, want the 3 whole ones: %q", len(got), got)
	}
	// The cut is gone from the file: the next append starts on a record boundary.
	if err := s.Append(records(3, 1)); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, s, true); len(got) != 1 || got[0] != string(records(3, 1)[0]) {
		t.Errorf("after the repair, appended %q", got)
	}
}

func TestSpoolRefusesWhenFullAndTakesMoreOnceDrained(t *testing.T) {
	dir := t.TempDir()
	const max = 256 << 10 // segments of 64 KiB
	s, err := Open(dir, Options{MaxBytes: max, RefuseWhenFull: true, Flag: "--x-max"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appended := 0
	for b := 0; ; b++ {
		err := s.Append(records(appended, 50))
		if errors.Is(err, ErrFull) {
			if !strings.Contains(err.Error(), "--x-max") {
				t.Errorf("the full error does not name the option: %v", err)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		appended += 50
		if b > 1000 {
			t.Fatal("the spool never filled")
		}
	}
	st := s.Stats()
	if st.Bytes > max || st.Dropped != 0 || st.Pending != int64(appended) {
		t.Fatalf("full spool %+v: want at most %d bytes, nothing dropped, %d pending", st, max, appended)
	}
	// Deliver the first segments: their room comes back.
	for range 1000 {
		r, ok, err := s.TryNext()
		if err != nil || !ok {
			t.Fatalf("TryNext: %v %v", ok, err)
		}
		if err := s.Ack(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Append(records(appended, 50)); err != nil {
		t.Fatalf("append after delivering 1000 records: %v", err)
	}
	got := drain(t, s, true)
	if len(got) != appended+50-1000 {
		t.Fatalf("drained %d, want %d", len(got), appended+50-1000)
	}
	for i, g := range got {
		if g != string(records(1000+i, 1)[0]) {
			t.Fatalf("record %d out of order: %s", i, g)
		}
	}
}

// Ack of many records at once, across segments, is what one Ack each would be, also after a
// restart.
func TestSpoolAckManyAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxBytes: 1 << 20}) // segments of 128 KiB
	if err != nil {
		t.Fatal(err)
	}
	for b := range 20 {
		if err := s.Append(records(b*100, 100)); err != nil {
			t.Fatal(err)
		}
	}
	var batch []Record
	for range 1500 {
		r, ok, err := s.TryNext()
		if err != nil || !ok {
			t.Fatalf("TryNext: %v %v", ok, err)
		}
		batch = append(batch, r)
	}
	if err := s.Ack(batch...); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Pending != 500 {
		t.Fatalf("pending %d after acking 1500 of 2000", st.Pending)
	}
	s.Close()
	s, err = Open(dir, Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := drain(t, s, true)
	if len(got) != 500 || got[0] != string(records(1500, 1)[0]) {
		t.Fatalf("after restart %d records from %.10s, want 500 from record 1500", len(got), got[0])
	}
}

func TestSpoolCapDropsOldestAndCounts(t *testing.T) {
	dir := t.TempDir()
	const max = 256 << 10
	s, err := Open(dir, Options{MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const batches, per = 100, 50 // about 120 bytes a record: 600 KB in all
	for b := range batches {
		if err := s.Append(records(b*per, per)); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Bytes > max+s.segMax {
		t.Errorf("spool holds %d bytes, cap %d (+ one segment %d)", st.Bytes, max, s.segMax)
	}
	if st.Dropped == 0 {
		t.Fatal("nothing counted as dropped although the spool went over its cap")
	}
	if int64(st.Dropped)+st.Pending != batches*per {
		t.Errorf("dropped %d + pending %d != appended %d", st.Dropped, st.Pending, batches*per)
	}
	got := drain(t, s, true)
	if int64(len(got)) != st.Pending {
		t.Errorf("drained %d, pending said %d", len(got), st.Pending)
	}
	// The newest records are the ones kept.
	if last := got[len(got)-1]; last != string(records(batches*per-1, 1)[0]) {
		t.Errorf("last kept record = %s", last)
	}
}

func TestSpoolIsLockedToOneProcess(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(dir, Options{MaxBytes: 1 << 20}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v, want an in-use error", err)
	}
}

func TestSpoolRotatesAndDeletesDeliveredSegments(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxBytes: 1 << 20}) // segments of 128 KiB
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for b := range 40 {
		if err := s.Append(records(b*100, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Stats().Segments; n < 3 {
		t.Fatalf("%d segments for 480 KB, want rotation", n)
	}
	got := drain(t, s, true)
	if len(got) != 4000 {
		t.Fatalf("drained %d, want 4000", len(got))
	}
	for i, g := range got {
		if g != string(records(i, 1)[0]) {
			t.Fatalf("record %d out of order: %s", i, g)
		}
	}
	if st := s.Stats(); st.Segments != 1 || st.Pending != 0 {
		t.Errorf("after delivering all: %+v, want one (current) segment, none pending", st)
	}
}

// FuzzSpoolOpen feeds arbitrary segment and ack files to Open: it must not panic, and
// every record it hands out is a line of the segment.
func FuzzSpoolOpen(f *testing.F) {
	f.Add([]byte("{\"a\":1}\n{\"b\":2}\n"), []byte{0, 0, 0, 0})
	f.Add([]byte("{\"a\":1}\n{\"b\""), []byte{8, 0, 0, 0, 1})
	f.Add([]byte("\n\n\n"), []byte{1, 0, 0, 0, 2, 0, 0, 0, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, seg, acks []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "0000000000000001"+segExt), seg, 0o600)
		os.WriteFile(filepath.Join(dir, "0000000000000001"+ackExt), acks, 0o600)
		s, err := Open(dir, Options{MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		lines := strings.Split(string(seg), "\n")
		for _, r := range drain(t, s, true) {
			found := false
			for _, l := range lines {
				if l == r {
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("record %q is not a line of the segment", r)
			}
		}
	})
}

// Records longer than the read-ahead, and records appended while the segment is being read,
// come back whole and in order.
func TestSpoolReadAhead(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var want []string
	add := func(recs [][]byte) {
		if err := s.Append(recs); err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			want = append(want, string(r))
		}
	}
	long := []byte(`{"long":"` + strings.Repeat("y", 3*readAhead) + `"}`)
	add(records(0, 10))
	var got []string
	take := func(n int) {
		for range n {
			r, ok, err := s.TryNext()
			if err != nil || !ok {
				t.Fatalf("TryNext after %d: %v %v", len(got), ok, err)
			}
			got = append(got, string(r.Data))
			s.Ack(r)
		}
	}
	take(5) // the read-ahead now holds records 5-9 only
	add([][]byte{long})
	add(records(10, 1000))
	take(5 + 1 + 500)
	add([][]byte{long, []byte(`{"after":"long"}`)})
	got = append(got, drain(t, s, true)...)
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("record %d: %.40q, want %.40q", i, got[i], want[i])
		}
	}
}
