package main

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// writePattern writes n bytes of the pattern tests check downloads
// against: byte i is i*7 mod 251.
func writePattern(w io.Writer, n int) {
	block := make([]byte, 251*256) // whole periods, so each write starts at byte 0 of one
	for i := range block {
		block[i] = byte(i * 7 % 251)
	}
	for off := 0; off < n; {
		k := min(len(block), n-off)
		if _, err := w.Write(block[:k]); err != nil {
			return
		}
		off += k
	}
}

// webSockets is a minimal WebSocket server (RFC 6455): it echoes text
// frames prefixed with its generation, and closes every connection with
// 1001 (going away) when asked.
type webSockets struct {
	gen   string
	mu    sync.Mutex
	conns map[net.Conn]chan struct{} // closed when the client answered the close
}

func (s *webSockets) serve(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" {
		http.Error(w, "not a websocket handshake", http.StatusBadRequest)
		return
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(sum[:]))
	rw.Flush()
	answered := make(chan struct{})
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[net.Conn]chan struct{}{}
	}
	s.conns[c] = answered
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	for {
		op, payload, err := readFrame(rw.Reader)
		if err != nil {
			return
		}
		switch op {
		case 0x8: // close: the client's answer to ours, or its own
			close(answered)
			s.mu.Lock()
			writeFrame(c, 0x8, payload)
			s.mu.Unlock()
			return
		case 0x1:
			s.mu.Lock()
			writeFrame(c, 0x1, []byte(fmt.Sprintf("gen=%s: %s", s.gen, payload)))
			s.mu.Unlock()
		}
	}
}

// closeAll sends every client a close frame (1001) and waits a little for
// their answers.
func (s *webSockets) closeAll() {
	s.mu.Lock()
	var waits []chan struct{}
	for c, answered := range s.conns {
		writeFrame(c, 0x8, []byte{0x03, 0xE9})
		waits = append(waits, answered)
	}
	s.mu.Unlock()
	for _, w := range waits {
		select {
		case <-w:
		case <-time.After(2 * time.Second):
		}
	}
}

// readFrame reads one (masked, client) frame of at most 64 KiB.
func readFrame(r *bufio.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		return 0, nil, fmt.Errorf("frame too long")
	}
	var mask [4]byte
	if h[1]&0x80 != 0 {
		if _, err := io.ReadFull(r, mask[:]); err != nil {
			return 0, nil, err
		}
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	return h[0] & 0x0f, payload, nil
}

// writeFrame writes one unmasked (server) frame of under 126 bytes.
func writeFrame(w io.Writer, op byte, payload []byte) error {
	_, err := w.Write(append([]byte{0x80 | op, byte(len(payload))}, payload...))
	return err
}
