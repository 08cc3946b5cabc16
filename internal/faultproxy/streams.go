package faultproxy

// http2Preface is what every HTTP/2 client sends first (RFC 9113 §3.4).
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

const (
	modeDetect = iota // at a request boundary: HTTP/2 preface or HTTP/1.x?
	modeH2
	modeH1
	modeOff // TLS or unrecognised: count nothing more
)

const (
	h1Method   = iota // reading the method token
	h1Line            // rest of the request line
	h1HdrStart        // start of a header line, or the blank line
	h1HdrName
	h1HdrValue
	h1Body // skipping Content-Length bytes
)

const (
	maxMethodLen = 20
	frameHeaders = 0x1
)

// streamCounter counts requests in a client->server byte stream, fed in
// arbitrary pieces. It keeps all its state in fixed fields, so feeding never
// allocates, and it only reads bytes already forwarded, so it never delays
// them.
//
// HTTP/2: after the client preface it walks the frames and counts HEADERS
// frames whose stream id is above the highest seen, i.e. new client streams.
// HTTP/1.x: it counts request lines, skipping each request's headers and its
// Content-Length body. A request with a Transfer-Encoding body, anything
// that is not HTTP (TLS starts with 0x16) or malformed stops the counting for
// that connection. The state goes back to detection after each HTTP/1.x
// request, so an h2c upgrade followed by the preface is followed too.
type streamCounter struct {
	mode     uint8
	preface  int // preface bytes matched in modeDetect
	started  bool
	h2hdr    [9]byte
	h2hdrLen int
	h2skip   uint32
	h2maxID  uint32
	h1state  uint8
	h1tok    int
	h1name   [len("transfer-encoding")]byte
	h1nlen   int
	h1clen   int64
	h1inCL   bool
	h1inTE   bool
	h1sawTE  bool
	h1remain int64
}

// feed consumes the next bytes of the stream and returns how many new
// requests they started.
func (s *streamCounter) feed(b []byte) int64 {
	var n int64
	for len(b) > 0 {
		switch s.mode {
		case modeOff:
			return n
		case modeH2:
			if s.h2skip > 0 {
				k := min(uint32(len(b)), s.h2skip)
				s.h2skip -= k
				b = b[k:]
				continue
			}
			k := copy(s.h2hdr[s.h2hdrLen:], b)
			s.h2hdrLen += k
			b = b[k:]
			if s.h2hdrLen < len(s.h2hdr) {
				continue
			}
			s.h2hdrLen = 0
			h := &s.h2hdr
			s.h2skip = uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2])
			id := (uint32(h[5])<<24 | uint32(h[6])<<16 | uint32(h[7])<<8 | uint32(h[8])) & 0x7fffffff
			if h[3] == frameHeaders && id > s.h2maxID {
				s.h2maxID = id
				n++
			}
		case modeH1:
			if s.h1state == h1Body {
				k := min(int64(len(b)), s.h1remain)
				s.h1remain -= k
				b = b[k:]
				if s.h1remain == 0 {
					s.mode, s.preface = modeDetect, 0
				}
				continue
			}
			n += s.stepH1(b[0])
			b = b[1:]
		case modeDetect:
			n += s.stepDetect(b[0])
			b = b[1:]
		}
	}
	return n
}

func (s *streamCounter) stepDetect(c byte) int64 {
	if s.preface == 0 {
		switch {
		case !s.started && c == 0x16: // TLS handshake record
			s.mode = modeOff
			return 0
		case s.started && (c == '\r' || c == '\n'):
			return 0 // tolerated between HTTP/1.x requests
		}
	}
	s.started = true
	if c == http2Preface[s.preface] {
		s.preface++
		if s.preface == len(http2Preface) {
			s.mode, s.h2hdrLen, s.h2skip, s.h2maxID = modeH2, 0, 0, 0
		}
		return 0
	}
	// Not HTTP/2: replay the matched prefix (constant, so no copy) as
	// HTTP/1.x, then this byte.
	matched := s.preface
	s.mode, s.h1state, s.h1tok = modeH1, h1Method, 0
	var n int64
	for i := 0; i < matched && s.mode == modeH1; i++ {
		n += s.stepH1(http2Preface[i])
	}
	if s.mode == modeH1 {
		n += s.stepH1(c)
	}
	return n
}

func (s *streamCounter) stepH1(c byte) int64 {
	switch s.h1state {
	case h1Method:
		switch {
		case c >= 'A' && c <= 'Z' && s.h1tok < maxMethodLen:
			s.h1tok++
		case c == ' ' && s.h1tok > 0:
			s.h1state = h1Line
			return 1
		default:
			s.mode = modeOff
		}
	case h1Line:
		if c == '\n' {
			s.h1state, s.h1clen, s.h1sawTE = h1HdrStart, 0, false
		}
	case h1HdrStart:
		switch c {
		case '\r':
		case '\n': // blank line: end of headers
			switch {
			case s.h1sawTE:
				s.mode = modeOff
			case s.h1clen > 0:
				s.h1state, s.h1remain = h1Body, s.h1clen
			default:
				s.mode, s.preface = modeDetect, 0
			}
		default:
			s.h1state, s.h1nlen = h1HdrName, 0
			s.appendName(c)
		}
	case h1HdrName:
		switch c {
		case ':':
			name := s.h1name[:min(s.h1nlen, len(s.h1name))]
			s.h1inCL = s.h1nlen == len("content-length") && string(name) == "content-length"
			s.h1inTE = s.h1nlen == len("transfer-encoding") && string(name) == "transfer-encoding"
			if s.h1inCL {
				s.h1clen = 0
			}
			s.h1state = h1HdrValue
		case '\n':
			s.h1state = h1HdrStart
		default:
			s.appendName(c)
		}
	case h1HdrValue:
		switch {
		case c == '\n':
			s.h1state = h1HdrStart
		case s.h1inCL && c >= '0' && c <= '9':
			s.h1clen = s.h1clen*10 + int64(c-'0')
			if s.h1clen > 1<<50 {
				s.mode = modeOff
			}
		case s.h1inTE && c != ' ' && c != '\t' && c != '\r':
			s.h1sawTE = true
		}
	}
	return 0
}

func (s *streamCounter) appendName(c byte) {
	if c >= 'A' && c <= 'Z' {
		c += 'a' - 'A'
	}
	if s.h1nlen < len(s.h1name) {
		s.h1name[s.h1nlen] = c
	}
	s.h1nlen++
}
