package main

import rego.v1

warn_missing_labels contains msg if {
	input.kind
	some label in ["app.kubernetes.io/name", "app.kubernetes.io/instance"]
	not input.metadata.labels[label]
	msg := sprintf("missing recommended label %s", [label])
}
