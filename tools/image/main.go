// Command oci-image builds the operator's image as an OCI layout without a Docker engine: the
// final stage of the Dockerfile (FROM scratch) is read and applied to the static binary, so the
// Dockerfile stays the one description of what the image contains.
//
//	oci-image -dockerfile Dockerfile -binary target/.../secretbundle-operator \
//	  -build-arg VERSION=0.1.0 -build-arg REVISION=abc -annotation k=v -out target/image/layout
//
// The result is reproducible: every timestamp is the Unix epoch, so the digest depends only on
// the binary, the Dockerfile and the arguments.
package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type pairs map[string]string

func (p pairs) String() string { return fmt.Sprint(map[string]string(p)) }

func (p pairs) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", s)
	}
	p[k] = v
	return nil
}

// stage is what the final stage of the Dockerfile declares.
type stage struct {
	copySrc, copyDst string
	config           v1.Config
	history          string
}

func main() {
	dockerfile := flag.String("dockerfile", "Dockerfile", "the Dockerfile whose final stage describes the image")
	binary := flag.String("binary", "", "the file the final stage COPYs in (the static binary)")
	out := flag.String("out", "", "directory to write the OCI image layout to (replaced)")
	args, annotations := pairs{}, pairs{}
	flag.Var(args, "build-arg", "KEY=VALUE for an ARG of the final stage (repeatable)")
	flag.Var(annotations, "annotation", "KEY=VALUE manifest annotation (repeatable)")
	annotationFiles := pairs{}
	flag.Var(annotationFiles, "annotation-file", "KEY=FILE manifest annotation read from a file (repeatable)")
	flag.Parse()
	if err := build(*dockerfile, *binary, *out, args, annotations, annotationFiles); err != nil {
		fmt.Fprintf(os.Stderr, "oci-image: %v\n", err)
		os.Exit(1)
	}
}

func build(dockerfile, binary, out string, args, annotations, annotationFiles pairs) error {
	if binary == "" || out == "" {
		return errors.New("-binary and -out are required")
	}
	text, err := os.ReadFile(dockerfile)
	if err != nil {
		return err
	}
	st, err := finalStage(string(text), args)
	if err != nil {
		return fmt.Errorf("%s: %w", dockerfile, err)
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return fmt.Errorf("%w (run `make static` first)", err)
	}
	for k, path := range annotationFiles {
		v, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		annotations[k] = strings.TrimRight(string(v), "\n")
	}
	layer, err := fileLayer(strings.TrimPrefix(st.copyDst, "/"), bin)
	if err != nil {
		return err
	}
	epoch := v1.Time{Time: time.Unix(0, 0).UTC()}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: epoch, CreatedBy: st.history},
	})
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = epoch
	cf.Config = st.config
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	// The labels are manifest annotations too, where registries and `crane manifest` show them.
	for k, v := range st.config.Labels {
		annotations[k] = v
	}
	img, ok := mutate.Annotations(img, annotations).(v1.Image)
	if !ok {
		return errors.New("annotating the manifest")
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	lp, err := layout.Write(out, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendImage(img); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	size, err := layer.Size()
	if err != nil {
		return err
	}
	fmt.Printf("%s (layer %d bytes compressed)\n", digest, size)
	return nil
}

// fileLayer is a layer holding one executable owned by root, as `COPY` without --chown makes
// it: the non-root user can run it but not change it.
func fileLayer(name string, content []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{
		Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg,
		ModTime: time.Unix(0, 0), Format: tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(content); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// finalStage reads the instructions after the last FROM. Only what an image without a base can
// hold is accepted; anything else is refused by name rather than silently dropped.
func finalStage(text string, buildArgs pairs) (*stage, error) {
	lines := logicalLines(text)
	start := -1
	for i, l := range lines {
		if strings.EqualFold(l.instr, "FROM") {
			start = i
		}
	}
	if start < 0 {
		return nil, errors.New("no FROM")
	}
	if from := strings.Fields(lines[start].rest); len(from) == 0 || from[0] != "scratch" {
		return nil, fmt.Errorf("line %d: the final stage must be FROM scratch: no base image can be pulled here", lines[start].no)
	}
	st := &stage{config: v1.Config{Labels: map[string]string{}}}
	vars := map[string]string{}
	for _, l := range lines[start+1:] {
		where := fmt.Sprintf("line %d (%s)", l.no, l.instr)
		switch strings.ToUpper(l.instr) {
		case "ARG":
			name, def, _ := strings.Cut(l.rest, "=")
			if v, ok := buildArgs[name]; ok {
				def = v
			}
			vars[name] = unquote(def)
		case "COPY":
			f := strings.Fields(l.rest)
			if st.copyDst != "" || len(f) != 3 || !strings.HasPrefix(f[0], "--from=") {
				return nil, fmt.Errorf("%s: want exactly one `COPY --from=STAGE SRC DST`", where)
			}
			st.copySrc, st.copyDst = f[1], f[2]
			st.history = "COPY " + l.rest
		case "USER":
			uid, gid, _ := strings.Cut(l.rest, ":")
			u, err1 := strconv.Atoi(uid)
			_, err2 := strconv.Atoi(gid)
			if err1 != nil || err2 != nil || u == 0 {
				return nil, fmt.Errorf("%s: want a numeric non-root UID:GID (there is no /etc/passwd), got %q", where, l.rest)
			}
			st.config.User = l.rest
		case "EXPOSE":
			st.config.ExposedPorts = map[string]struct{}{}
			for _, p := range strings.Fields(l.rest) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				st.config.ExposedPorts[p] = struct{}{}
			}
		case "LABEL":
			kv, err := keyValues(l.rest)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			for k, v := range kv {
				st.config.Labels[k] = expand(v, vars)
			}
		case "ENV":
			kv, err := keyValues(l.rest)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			for k, v := range kv {
				st.config.Env = append(st.config.Env, k+"="+expand(v, vars))
			}
		case "ENTRYPOINT", "CMD":
			var argv []string
			if err := json.Unmarshal([]byte(l.rest), &argv); err != nil {
				return nil, fmt.Errorf("%s: want the JSON form: the image has no shell", where)
			}
			if strings.EqualFold(l.instr, "CMD") {
				st.config.Cmd = argv
			} else {
				st.config.Entrypoint = argv
			}
		default:
			return nil, fmt.Errorf("%s: not supported in the final stage", where)
		}
	}
	if st.copyDst == "" {
		return nil, errors.New("the final stage COPYs nothing")
	}
	if st.config.User == "" {
		return nil, errors.New("the final stage sets no USER: it would run as root")
	}
	return st, nil
}

type line struct {
	no          int
	instr, rest string
}

// logicalLines joins backslash continuations and drops comments and blank lines.
func logicalLines(text string) []line {
	var out []line
	var cur strings.Builder
	first := 0
	for i, raw := range strings.Split(text, "\n") {
		t := strings.TrimSpace(raw)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if cur.Len() == 0 {
			first = i + 1
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		instr, rest, _ := strings.Cut(cur.String(), " ")
		out = append(out, line{first, instr, strings.TrimSpace(rest)})
		cur.Reset()
	}
	return out
}

var kvRe = regexp.MustCompile(`\s*([^=\s]+)=("(?:[^"\\]|\\.)*"|\S*)`)

func keyValues(s string) (map[string]string, error) {
	out := map[string]string{}
	rest := s
	for strings.TrimSpace(rest) != "" {
		m := kvRe.FindStringSubmatchIndex(rest)
		if m == nil || m[0] != 0 {
			return nil, fmt.Errorf("want KEY=VALUE pairs, got %q", rest)
		}
		out[rest[m[2]:m[3]]] = unquote(rest[m[4]:m[5]])
		rest = rest[m[1]:]
	}
	return out, nil
}

func unquote(v string) string {
	if u, err := strconv.Unquote(v); err == nil {
		return u
	}
	return v
}

var varRe = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)

func expand(v string, vars map[string]string) string {
	return varRe.ReplaceAllStringFunc(v, func(m string) string {
		return vars[strings.Trim(m, "${}")]
	})
}
