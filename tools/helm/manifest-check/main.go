// manifest-check decodes every object of rendered Kubernetes manifests (a
// multi-document YAML stream on stdin or in the files named) into its Go API
// type with strict decoding: an unknown or duplicated field, a value of the
// wrong type, or a kind/apiVersion this checker does not know is an error.
// Built-in kinds come from k8s.io/api (client-go's scheme); the custom
// resources the chart renders from their projects' own API packages
// (Prometheus Operator ServiceMonitor, KEDA ScaledObject and
// TriggerAuthentication). JSON-schema checks of required fields and formats
// are kubernetes-validate's job (tools/helm/check.sh runs both).
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	keda "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoring "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{scheme.AddToScheme, monitoring.AddToScheme, keda.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// check decodes each document of r; it returns the number of objects and the problems found.
func check(name string, r io.Reader, s *runtime.Scheme) (int, []string) {
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, s, s, json.SerializerOptions{Yaml: true, Strict: true})
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var problems []string
	objects := 0
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: document %d: %v", name, doc, err))
			break
		}
		var h header
		if err := yaml.Unmarshal(raw, &h); err != nil {
			problems = append(problems, fmt.Sprintf("%s: document %d: not YAML: %v", name, doc, err))
			continue
		}
		if h.APIVersion == "" && h.Kind == "" && len(bytes.TrimSpace(stripComments(raw))) == 0 {
			continue // an empty document (a template rendered to nothing)
		}
		objects++
		where := fmt.Sprintf("%s: %s %s (%s)", name, h.Kind, h.Metadata.Name, h.APIVersion)
		gv, err := schema.ParseGroupVersion(h.APIVersion)
		if err != nil || h.Kind == "" {
			problems = append(problems, fmt.Sprintf("%s: missing or bad apiVersion/kind", where))
			continue
		}
		if !s.Recognizes(gv.WithKind(h.Kind)) {
			problems = append(problems, fmt.Sprintf("%s: unknown kind for this apiVersion", where))
			continue
		}
		if _, _, err := strict.Decode(raw, nil, nil); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		if h.Metadata.Name == "" {
			problems = append(problems, fmt.Sprintf("%s: metadata.name is empty", where))
		}
	}
	return objects, problems
}

func stripComments(raw []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

func main() {
	s, err := newScheme()
	if err != nil {
		fmt.Fprintln(os.Stderr, "manifest-check:", err)
		os.Exit(2)
	}
	inputs := os.Args[1:]
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	total := 0
	var problems []string
	for _, in := range inputs {
		var r io.Reader = os.Stdin
		if in != "-" {
			f, err := os.Open(in)
			if err != nil {
				fmt.Fprintln(os.Stderr, "manifest-check:", err)
				os.Exit(2)
			}
			defer f.Close()
			r = f
		}
		n, p := check(in, r, s)
		total += n
		problems = append(problems, p...)
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "ERROR", p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "manifest-check: %d of %d objects failed\n", len(problems), total)
		os.Exit(1)
	}
	fmt.Printf("manifest-check: %d objects decoded strictly\n", total)
}
