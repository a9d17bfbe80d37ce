package hits

import (
	"strings"
	"testing"
)

// A dialled number is a scanner's text: in a Slack message it can mention nobody, link
// nowhere and break no line.
func TestSlackTextIsInert(t *testing.T) {
	got := slackText("number <!channel> <https://evil.example|bank> a&b\nFAKE LINE\u2028" + strings.Repeat("9", 2000))
	for _, bad := range []string{"<", ">", "\n", "\u2028", "a&b"} {
		if strings.Contains(got, bad) {
			t.Errorf("slack text holds %q: %q", bad, got[:80])
		}
	}
	if !strings.Contains(got, "&lt;!channel&gt;") || len(got) > 1003 {
		t.Errorf("slack text %q (%d bytes)", got[:80], len(got))
	}
}
