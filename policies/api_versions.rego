package main

import rego.v1

# apiVersion -> the release that stopped serving it and, per kind, what to use
# instead ("*" covers every kind of that apiVersion).
# Source: https://kubernetes.io/docs/reference/using-api/deprecation-guide/
removed_apis := {
	"extensions/v1beta1": {"removed_in": "1.22", "kinds": {
		"Deployment": "apps/v1",
		"DaemonSet": "apps/v1",
		"ReplicaSet": "apps/v1",
		"NetworkPolicy": "networking.k8s.io/v1",
		"Ingress": "networking.k8s.io/v1",
		"PodSecurityPolicy": "Pod Security Admission",
		"*": "a current API version",
	}},
	"apps/v1beta1": {"removed_in": "1.16", "kinds": {"*": "apps/v1"}},
	"apps/v1beta2": {"removed_in": "1.16", "kinds": {"*": "apps/v1"}},
	"networking.k8s.io/v1beta1": {"removed_in": "1.22", "kinds": {"*": "networking.k8s.io/v1"}},
	"admissionregistration.k8s.io/v1beta1": {"removed_in": "1.22", "kinds": {
		"MutatingWebhookConfiguration": "admissionregistration.k8s.io/v1",
		"ValidatingWebhookConfiguration": "admissionregistration.k8s.io/v1",
	}},
	"apiextensions.k8s.io/v1beta1": {"removed_in": "1.22", "kinds": {"*": "apiextensions.k8s.io/v1"}},
	"apiregistration.k8s.io/v1beta1": {"removed_in": "1.22", "kinds": {"*": "apiregistration.k8s.io/v1"}},
	"certificates.k8s.io/v1beta1": {"removed_in": "1.22", "kinds": {"*": "certificates.k8s.io/v1"}},
	"coordination.k8s.io/v1beta1": {"removed_in": "1.22", "kinds": {"*": "coordination.k8s.io/v1"}},
	"rbac.authorization.k8s.io/v1beta1": {"removed_in": "1.22", "kinds": {"*": "rbac.authorization.k8s.io/v1"}},
	"scheduling.k8s.io/v1beta1": {"removed_in": "1.22", "kinds": {"*": "scheduling.k8s.io/v1"}},
	"storage.k8s.io/v1beta1": {"removed_in": "1.22", "kinds": {
		"CSIDriver": "storage.k8s.io/v1",
		"CSINode": "storage.k8s.io/v1",
		"StorageClass": "storage.k8s.io/v1",
		"VolumeAttachment": "storage.k8s.io/v1",
	}},
	"batch/v1beta1": {"removed_in": "1.25", "kinds": {"*": "batch/v1"}},
	"discovery.k8s.io/v1beta1": {"removed_in": "1.25", "kinds": {"*": "discovery.k8s.io/v1"}},
	"events.k8s.io/v1beta1": {"removed_in": "1.25", "kinds": {"*": "events.k8s.io/v1"}},
	"autoscaling/v2beta1": {"removed_in": "1.25", "kinds": {"*": "autoscaling/v2"}},
	"policy/v1beta1": {"removed_in": "1.25", "kinds": {
		"PodDisruptionBudget": "policy/v1",
		"PodSecurityPolicy": "Pod Security Admission",
		"*": "policy/v1",
	}},
	"node.k8s.io/v1beta1": {"removed_in": "1.25", "kinds": {"*": "node.k8s.io/v1"}},
	"autoscaling/v2beta2": {"removed_in": "1.26", "kinds": {"*": "autoscaling/v2"}},
	"flowcontrol.apiserver.k8s.io/v1beta1": {"removed_in": "1.26", "kinds": {"*": "flowcontrol.apiserver.k8s.io/v1"}},
	"flowcontrol.apiserver.k8s.io/v1beta2": {"removed_in": "1.29", "kinds": {"*": "flowcontrol.apiserver.k8s.io/v1"}},
	"flowcontrol.apiserver.k8s.io/v1beta3": {"removed_in": "1.32", "kinds": {"*": "flowcontrol.apiserver.k8s.io/v1"}},
}

removed_replacement := r if {
	kinds := removed_apis[input.apiVersion].kinds
	r := object.get(kinds, input.kind, object.get(kinds, "*", ""))
	r != ""
}

deny_removed_api contains msg if {
	# Every API in removed_apis is a beta version; the guard spares the table.
	contains(input.apiVersion, "beta")
	replacement := removed_replacement
	msg := sprintf("%s %s is no longer served since Kubernetes %s; use %s", [
		input.apiVersion, input.kind, removed_apis[input.apiVersion].removed_in, replacement,
	])
}

warn_deprecated_api contains msg if {
	# apiVersion -> kind -> the release that deprecated it and what to use instead
	deprecated := {"v1": {
		"ComponentStatus": {"since": "1.19", "use": "the /livez and /readyz endpoints"},
		"Endpoints": {"since": "1.33", "use": "discovery.k8s.io/v1 EndpointSlice"},
	}}
	kinds := deprecated[input.apiVersion]
	info := kinds[input.kind]
	msg := sprintf("%s %s is deprecated since Kubernetes %s; use %s", [input.apiVersion, input.kind, info.since, info.use])
}
