package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// askPolicy runs one SIPp INVITE against the policy agent with a scenario that expects 302
// (policy_302.xml: Contact is the dialled target) or 403 (policy_403.xml: with a Reason).
func askPolicy(t *testing.T, agent, number, scenario string) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// SIPp fills no keywords into a regexp: the expected Contact is written into the scenario.
	b, err := os.ReadFile(abs(t, "testdata/"+scenario))
	if err != nil {
		t.Fatal(err)
	}
	want := html.EscapeString(regexp.QuoteMeta("sip:" + number + "@" + agent))
	sf := filepath.Join(t.TempDir(), scenario)
	const generic = "sip:[^@]+@[^&gt;]+&gt;$"
	if scenario == "policy_302.xml" && !strings.Contains(string(b), generic) {
		t.Fatalf("%s no longer holds the Contact pattern the test makes exact", scenario)
	}
	os.WriteFile(sf, []byte(strings.ReplaceAll(string(b), generic, want+"&gt;$")), 0o644)
	cmd := exec.CommandContext(ctx, "sipp", "-sf", sf, "-s", number, "-m", "1", "-t", "u1",
		"-i", "127.0.0.1", "-p", fmt.Sprint(testutil.FreePort(t, "")), "-nostdin", "-timeout", "10", "-timeout_error", "-max_retrans", "1", agent)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	return err == nil, string(out)
}

// TestNodePolicyAgent: a node with --policy-addr answers a PBX's INVITEs from its own store:
// 302 to the dialled target for a clean number, 403 with a Reason for a number an attacker
// dialled (in its national and international forms), and /policy counts the decisions.
func TestNodePolicyAgent(t *testing.T) {
	need(t, "sipp")
	n := startNode(t, nodeOpts{args: []string{"-r", "-a", "--number-match", "national", "--policy-addr", "127.0.0.1:0"}})
	b, err := os.ReadFile(n.ready)
	if err != nil {
		t.Fatal(err)
	}
	var addrs struct {
		UDP string `json:"policy_udp"`
		TCP string `json:"policy_tcp"`
	}
	if err := json.Unmarshal(b, &addrs); err != nil || addrs.UDP == "" || addrs.TCP == "" {
		t.Fatalf("ready file without the policy agent's addresses: %s", b)
	}
	// An attacker dials a premium number through the honeypot.
	if out, err := run(t, 30*time.Second, "sipp", "-sf", abs(t, "testdata/invite.xml"), "-s", "0044900123456", "-m", "1", "-t", "u1",
		"-i", "127.0.0.5", "-p", fmt.Sprint(testutil.FreePort(t, "")), "-nostdin", "-timeout", "10", "-timeout_error", fmt.Sprintf("127.0.0.1:%d", n.port)); err != nil {
		t.Fatalf("attack: %v\n%s", err, tail(out, 2000))
	}
	testutil.Eventually(t, "the attack stored", 10*time.Second, func() bool {
		resp, err := http.Get("http://" + n.apiAddr + "/numbers/0044900123456")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	for _, tc := range []struct {
		number, scenario string
	}{
		{"442071234567", "policy_302.xml"},  // clean
		{"0044900123456", "policy_403.xml"}, // as the attacker dialled it
		{"+44900123456", "policy_403.xml"},  // the national match: the same target
		{"9011900123456", "policy_302.xml"}, // another country's prefix and number: not the same
		{"112", "policy_302.xml"},           // emergency: never refused
	} {
		ok, out := askPolicy(t, addrs.UDP, tc.number, tc.scenario)
		if !ok {
			t.Errorf("%s with %s failed:\n%s", tc.number, tc.scenario, tail(out, 2000))
		}
	}
	// A wrong expectation fails: the scenarios check what they claim to.
	if ok, _ := askPolicy(t, addrs.UDP, "0044900123456", "policy_302.xml"); ok {
		t.Error("a known-bad number passed a scenario expecting 302")
	}
	resp, err := http.Get("http://" + n.apiAddr + "/policy")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Decisions map[string]uint64 `json:"decisions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Decisions["allow"] != 3 || st.Decisions["deny_number"] != 3 {
		t.Fatalf("/policy decisions %v, want allow 3 and deny_number 3", st.Decisions)
	}
}
