package osproc

import (
	"strings"
	"testing"
)

func TestParseNotification(t *testing.T) {
	n := parseNotification([]byte("READY=1\nSTATUS=serving 12 requests\nMAINPID=4\nWATCHDOG=1"))
	if !n.Ready || !n.HasStatus || n.Status != "serving 12 requests" || n.Stopping {
		t.Errorf("got %+v", n)
	}
	if n := parseNotification([]byte("READY=0\nSTOPPING=1")); n.Ready || !n.Stopping {
		t.Errorf("got %+v", n)
	}
	if n := readyLine([]byte("ready\n")); !n.Ready {
		t.Errorf("a plain line on the ready fd must mean ready: %+v", n)
	}
	if n := readyLine([]byte("STATUS=warming up\n")); n.Ready || n.Status != "warming up\n" && n.Status != "warming up" {
		t.Errorf("a STATUS line is not readiness: %+v", n)
	}
}

// FuzzParseNotification: any datagram parses without panic, and READY is
// set only by a READY=1 field.
func FuzzParseNotification(f *testing.F) {
	for _, s := range []string{"READY=1", "STATUS=x\nREADY=1\n", "STOPPING=1", "", "=", "READY", "\x00\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		n := parseNotification(msg)
		if n.Ready && !strings.Contains("\n"+string(msg)+"\n", "\nREADY=1\n") {
			t.Fatalf("ready without READY=1 in %q", msg)
		}
		readyLine(msg)
	})
}
