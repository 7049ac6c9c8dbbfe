package main

import rego.v1

configmap(labels) := {"kind": "ConfigMap", "metadata": {"name": "c", "labels": labels}}

test_missing_labels_warned if {
	count(warn_missing_labels) == 2 with input as configmap({})
}

test_recommended_labels_allowed if {
	count(warn_missing_labels) == 0 with input as configmap({"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "web-prod"})
}
