package integration

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestPhoneCallsTwilio: SIPp as a phone calls out through edgewise; edgesim,
// standing in for Twilio, challenges the gateway with 407 and answers; the
// phone hangs up; both legs end and edgesim saw an answered call ended by
// the gateway.
func TestPhoneCallsTwilio(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	row := []string{"alice", "[authentication username=alice password=alice-secret]", "15550001111"}
	if code, out := sippRun(t, "call.xml", nextIP(t), d.ip+":5060", [][]string{row}, 1); code != 0 {
		t.Fatalf("call through edgewise: sipp exited %d:\n%s", code, out)
	}
	var calls struct {
		Calls []struct {
			State   string `json:"state"`
			Code    int    `json:"code"`
			EndedBy string `json:"ended_by"`
			To      string `json:"to"`
		} `json:"calls"`
	}
	kit.WaitFor(t, 5*time.Second, "edgesim to see the call ended by the gateway", func() bool {
		resp, err := http.Get(s.control + "/v1/calls")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&calls); err != nil {
			return false
		}
		return len(calls.Calls) == 1 && calls.Calls[0].State == "ended" && calls.Calls[0].EndedBy == "gateway"
	})
	kit.WaitFor(t, 5*time.Second, "no call left in edgewise's status", func() bool {
		st, err := d.getStatus()
		return err == nil && len(st.Calls) == 0
	})
}
