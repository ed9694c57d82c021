package main

import (
	"fmt"
	"os"
	"os/exec"
)

// webrtcSuite runs test/bench/webrtcbench: bridged browser ⇄ RTP calls
// at 50 pps each way, stepped until loss reaches 0.5 %, with the bridge
// process's CPU per call and the call setup (ICE + DTLS) rate, edgewise
// and rtpengine (ICE + DTLS-SRTP toward the browsers, plain RTP toward the
// far ends) taking turns at each step. The browsers are pion
// PeerConnections in the driver process on the same cores. It prints its
// own table; a failed rtpengine step is a row of it.
func webrtcSuite(repo string) (string, error) {
	cmd := exec.Command("go", "run", webrtcBenchPkg)
	cmd.Dir = repo
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("webrtcbench: %w", err)
	}
	return string(out), nil
}
