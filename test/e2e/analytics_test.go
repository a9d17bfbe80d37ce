package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// Real tools probe a node; the analytics name each tool from its messages' shape, flag a
// sipvicious probe that calls itself a Cisco gateway, count the SQL injection in a To header,
// group each tool's run into a campaign, and dialtrap top prints the picture.
func TestAnalyticsOverRealTools(t *testing.T) {
	need(t, "svmap", "sipsak", "sipp")
	n := startNode(t, nodeOpts{args: []string{"-r", "-a", "--api-token", "tok"}})
	port := fmt.Sprint(n.port)
	if out, err := run(t, 60*time.Second, "svmap", "-p"+port, "-P", fmt.Sprint(testutil.FreePort(t, "")), "127.0.0.1"); err != nil {
		t.Fatalf("svmap: %v\n%s", err, out)
	}
	if out, err := run(t, 30*time.Second, "sipsak", "-s", fmt.Sprintf("sip:200@127.0.0.1:%d", n.port)); err != nil {
		t.Fatalf("sipsak: %v\n%s", err, out)
	}
	if out, err := run(t, 60*time.Second, "sipp", "-sf", abs(t, "testdata/invite.xml"), "-s", "900449098790123",
		"-m", "2", "-r", "50", "-t", "u1", "-i", "127.0.0.1", "-p", fmt.Sprint(testutil.FreePort(t, "")),
		"-nostdin", "-timeout", "30", "-timeout_error", "-max_retrans", "2", "127.0.0.1:"+port); err != nil {
		t.Fatalf("sipp: %v\n%s", err, tail(out, 2000))
	}
	// sipvicious' shape under a lying User-Agent (what the seed's capture shows), and a
	// payload in the To header.
	spoof := "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-2440370891;rport\r\n" +
		"Max-Forwards: 70\r\nTo: \"1' OR '1'='1\" <sip:1'OR'1'='1@127.0.0.1>\r\n" +
		"From: \"sipvicious\"<sip:100@1.1.1.1>;tag=6237366533356438313363340131393434303135363331\r\n" +
		"User-Agent: Cisco-SIPGateway/IOS-12.x\r\nCall-ID: 1287213452\r\nContact: <sip:100@1.1.1.1>\r\n" +
		"CSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n"
	sendUDP(t, "127.0.0.1", spoof, n.port)

	a := api{t: t, base: "http://" + n.apiAddr, token: "tok"}
	var tools struct {
		Tools []struct {
			Tool    string `json:"tool"`
			Count   string `json:"seen_count"`
			Spoofed string `json:"ua_spoofed_count"`
		} `json:"tools"`
	}
	deadline := time.Now().Add(10 * time.Second)
	got := map[string][2]string{}
	for time.Now().Before(deadline) {
		status, _, body := a.get("/stats/tools")
		if status != 200 {
			t.Fatalf("/stats/tools: %d %s", status, body)
		}
		if err := json.Unmarshal([]byte(body), &tools); err != nil {
			t.Fatal(err)
		}
		got = map[string][2]string{}
		for _, x := range tools.Tools {
			got[x.Tool] = [2]string{x.Count, x.Spoofed}
		}
		if got["sipvicious"][1] == "1" && got["sipsak"][0] == "1" && got["sipp"][0] != "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got["sipvicious"][1] != "1" || got["sipsak"][0] != "1" || got["sipp"][0] == "" || got["unknown"][0] != "" {
		t.Fatalf("tools (count, spoofed): %v", got)
	}

	// Targets are regrouped every 5 s while asked (docs/analytics.md): the first answer may
	// predate the probes.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, _, body := a.get("/stats/targets")
		if strings.Contains(body, `"target": "+449098790123"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/stats/targets has no +449098790123 10 s after the probes:\n%s", body)
		}
	}
	for path, want := range map[string]string{
		"/stats/payloads":  `"payload": "sqli@to"`,
		"/stats/prefixes":  `"prefix": "900"`,
		"/stats/countries": `"country": "ZZ"`, // loopback
		"/campaigns":       `"tool": "sipp"`,
	} {
		if status, _, body := a.get(path); status != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d, want %s in\n%s", path, status, want, body)
		}
	}
	status, _, body := a.get("/numbers/900449098790123")
	if status != 200 || !strings.Contains(body, `"type": "premium-rate"`) || !strings.Contains(body, `"fresh": true`) {
		t.Errorf("/numbers/900449098790123: %d\n%s", status, body)
	}

	// Not a terminal: one plain snapshot.
	code, out, errOut := dialtrap(t, "top", "--api-url", "http://"+n.apiAddr, "--api-token", "tok")
	if code != 0 {
		t.Fatalf("top: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"probes/min", "sipvicious", "sipsak", "sipp", "+449098790123", "premium-rate", "fresh", "CAMPAIGN SOURCE", "127.0.0.1"} {
		if !strings.Contains(out, want) {
			t.Errorf("top output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("top wrote terminal escapes into a pipe:\n%q", out)
	}
	if code, _, errOut := dialtrap(t, "top", "--api-url", "http://"+n.apiAddr); code != 1 || !strings.Contains(errOut, "401") || !strings.Contains(errOut, "give the node's token") {
		t.Errorf("top without the token: exit %d: %s", code, errOut)
	}
	if code, _, errOut := dialtrap(t, "top", "--api-url", "http://"+n.apiAddr, "--api-token", "wrong"); code != 1 || !strings.Contains(errOut, "refused the token") {
		t.Errorf("top with a wrong token: exit %d: %s", code, errOut)
	}
}
