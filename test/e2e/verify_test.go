package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// jsonEvents reads the JSON log of a stopped node, in arrival order. It is read rather than
// the store because source_verified is what the JSON log, webhook and peers get.
func jsonEvents(t *testing.T, n *node) []*event.Event {
	t.Helper()
	var evs []*event.Event
	for _, line := range n.jsonLines() {
		if line == "" {
			continue
		}
		e := new(event.Event)
		if err := json.Unmarshal([]byte(line), e); err != nil {
			t.Fatalf("JSON log line: %v: %.100q", err, line)
		}
		if !strings.Contains(line, `"source_verified":`) {
			t.Errorf("no source_verified in %.200s", line)
		}
		evs = append(evs, e)
	}
	// Timestamps are taken on arrival, before the reply: a scanner's answer to our reply may
	// be published before the probe it answers, never stamped before it.
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Timestamp < evs[j].Timestamp })
	return evs
}

// Which real scanners, in their normal flow against a responsive node, end up with their
// source address proven (source_verified): those that send back something only our reply
// to their address carried, and any over TCP or TLS. Each tool gets a node of its own, since
// a proven address stays proven for an hour and every tool here sends from 127.0.0.1.
func TestVerifySourcesByTool(t *testing.T) {
	need(t, "sipp", "svmap", "svwar", "svcrack", "sipsak")
	words := filepath.Join(t.TempDir(), "words.txt")
	if err := os.WriteFile(words, []byte("1234\nsecret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tools := []struct {
		name     string
		verified bool   // at least one event verified
		output   string // the tool's output must contain this
		run      func(t *testing.T, n *node) (string, error)
	}{
		// INVITE, 100 Trying and 404, then the ACK for the 404 carries our To tag.
		{"sipp INVITE", true, "", func(t *testing.T, n *node) (string, error) {
			return run(t, 60*time.Second, "sipp", "-sf", abs(t, "testdata/invite.xml"), "-s", "0046812118532",
				"-m", "2", "-t", "u1", "-i", "127.0.0.1", "-p", fmt.Sprint(testutil.FreePort(t, "")), "-nostdin",
				"-timeout", "30", "-timeout_error", "-max_retrans", "2", fmt.Sprintf("127.0.0.1:%d", n.port))
		}},
		// REGISTER, 401 with our nonce, REGISTER with credentials for it: any password is
		// accepted, so the first of the list is reported.
		{"svcrack", true, "1234", func(t *testing.T, n *node) (string, error) {
			return run(t, 60*time.Second, "svcrack", "-u100", "-d", words, fmt.Sprintf("-p%d", n.port),
				"-P", fmt.Sprint(testutil.FreePort(t, "")), "127.0.0.1")
		}},
		// svwar ACKs the 404 to each INVITE, with our tag.
		{"svwar -m INVITE", true, "", func(t *testing.T, n *node) (string, error) {
			return run(t, 60*time.Second, "svwar", fmt.Sprintf("-p%d", n.port), "-P", fmt.Sprint(testutil.FreePort(t, "")),
				"-e100-102", "-m", "INVITE", "127.0.0.1")
		}},
		// One OPTIONS, one 200: nothing comes back to us.
		{"svmap", false, "Asterisk PBX", func(t *testing.T, n *node) (string, error) {
			return run(t, 60*time.Second, "svmap", fmt.Sprintf("-p%d", n.port), "-P", fmt.Sprint(testutil.FreePort(t, "")), "127.0.0.1")
		}},
		// svwar first REGISTERs a random extension; our 401 to it ends the scan (as Asterisk's
		// alwaysauthreject does), without an answer to the challenge.
		{"svwar REGISTER", false, "authentication request for an unknown extension", func(t *testing.T, n *node) (string, error) {
			return run(t, 60*time.Second, "svwar", fmt.Sprintf("-p%d", n.port), "-P", fmt.Sprint(testutil.FreePort(t, "")),
				"-e100-104", "-m", "REGISTER", "127.0.0.1")
		}},
		{"sipsak OPTIONS", false, "", func(t *testing.T, n *node) (string, error) {
			return run(t, 30*time.Second, "sipsak", "-s", fmt.Sprintf("sip:200@127.0.0.1:%d", n.port))
		}},
		{"sipsak TCP", true, "", func(t *testing.T, n *node) (string, error) {
			return run(t, 30*time.Second, "sipsak", "--transport=tcp", "-s", fmt.Sprintf("sip:201@127.0.0.1:%d", n.port))
		}},
		{"sipsak TLS", true, "", func(t *testing.T, n *node) (string, error) {
			return run(t, 30*time.Second, "sipsak", "--transport=tls", "--tls-ignore-cert-failure", "-s",
				fmt.Sprintf("sip:202@127.0.0.1:%d", n.tlsPort))
		}},
		// sipsak's registration test answers our challenge with the nonce (it exits 0 once
		// registered).
		{"sipsak -U -a", true, "", func(t *testing.T, n *node) (string, error) {
			return run(t, 30*time.Second, "sipsak", "-U", "-a", "secret", "-s", fmt.Sprintf("sip:300@127.0.0.1:%d", n.port))
		}},
	}
	var table []string
	for _, tool := range tools {
		t.Run(strings.ReplaceAll(tool.name, " ", "_"), func(t *testing.T) {
			n := startNode(t, nodeOpts{args: []string{"-r"}})
			out, err := tool.run(t, n)
			if err != nil {
				// Each tool exits non-zero when the node's replies were not what it expects.
				t.Fatalf("%s: %v\n%s", tool.name, err, tail(out, 2000))
			}
			if !strings.Contains(out, tool.output) {
				t.Errorf("%s output lacks %q:\n%s", tool.name, tool.output, tail(out, 2000))
			}
			n.stop()
			evs := jsonEvents(t, n)
			if len(evs) == 0 {
				t.Fatal("no event recorded")
			}
			var flow []string
			var verified int
			for i, e := range evs {
				mark := "-"
				if e.SourceVerified {
					mark = "+"
					verified++
				}
				flow = append(flow, e.SIPMethod+mark)
				switch {
				case e.Transport != event.UDP && !e.SourceVerified:
					t.Errorf("%s %s over %s not verified", e.SIPMethod, e.CalledNumber, e.Transport)
				case e.Transport == event.UDP && i == 0 && e.SourceVerified:
					t.Errorf("the first message, %s, verified before anything was echoed", e.SIPMethod)
				case e.Transport == event.UDP && i > 0 && evs[i-1].SourceVerified && !e.SourceVerified:
					t.Errorf("%s after a verified message not verified: the address is remembered", e.SIPMethod)
				}
			}
			if got := verified > 0; got != tool.verified {
				t.Errorf("%s: verified %v, want %v (events: %s)", tool.name, got, tool.verified, strings.Join(flow, " "))
			}
			if tool.name == "svwar REGISTER" && len(evs) != 1 {
				t.Errorf("svwar went on after our challenge: %s", strings.Join(flow, " "))
			}
			table = append(table, fmt.Sprintf("%-16s verified=%-5v %s", tool.name, verified > 0, strings.Join(flow, " ")))
		})
	}
	t.Logf("tool -> source_verified (events in order, + verified):\n%s", strings.Join(table, "\n"))
}
