package main

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The LeaderWorkerSet API (leaderworkerset.x-k8s.io/v1) as its API
// reference documents it. Its Go module (sigs.k8s.io/lws) is not served
// through the Go module proxy this project builds from, so its fields are
// declared here for the strict decode of the chart's LeaderWorkerSets;
// the pod templates inside are the real corev1 type.
const lwsAPIVersion = "leaderworkerset.x-k8s.io/v1"

type leaderWorkerSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              lwsSpec `json:"spec"`
}

type lwsSpec struct {
	Replicas             *int32               `json:"replicas,omitempty"`
	LeaderWorkerTemplate leaderWorkerTemplate `json:"leaderWorkerTemplate"`
	RolloutStrategy      *lwsRolloutStrategy  `json:"rolloutStrategy,omitempty"`
	// StartupPolicy is LeaderCreated or LeaderReady.
	StartupPolicy string            `json:"startupPolicy,omitempty"`
	NetworkConfig *lwsNetworkConfig `json:"networkConfig,omitempty"`
}

type leaderWorkerTemplate struct {
	LeaderTemplate *corev1.PodTemplateSpec `json:"leaderTemplate,omitempty"`
	WorkerTemplate corev1.PodTemplateSpec  `json:"workerTemplate"`
	// Size is the number of pods of a group, the leader included.
	Size *int32 `json:"size,omitempty"`
	// RestartPolicy is RecreateGroupOnPodRestart, RecreateGroupAfterStart
	// or None.
	RestartPolicy        string                         `json:"restartPolicy,omitempty"`
	SubGroupPolicy       *lwsSubGroupPolicy             `json:"subGroupPolicy,omitempty"`
	VolumeClaimTemplates []corev1.PersistentVolumeClaim `json:"volumeClaimTemplates,omitempty"`
}

type lwsRolloutStrategy struct {
	Type                       string `json:"type"`
	RollingUpdateConfiguration *struct {
		Partition      *int32             `json:"partition,omitempty"`
		MaxUnavailable intstr.IntOrString `json:"maxUnavailable,omitempty"`
		MaxSurge       intstr.IntOrString `json:"maxSurge,omitempty"`
	} `json:"rollingUpdateConfiguration,omitempty"`
}

type lwsSubGroupPolicy struct {
	Type         *string `json:"subGroupPolicyType,omitempty"`
	SubGroupSize *int32  `json:"subGroupSize,omitempty"`
}

type lwsNetworkConfig struct {
	SubdomainPolicy *string `json:"subdomainPolicy"`
}

// Labels the LeaderWorkerSet controller puts on a group's pods.
const (
	lwsGroupIndexLabel  = "leaderworkerset.sigs.k8s.io/group-index"
	lwsWorkerIndexLabel = "leaderworkerset.sigs.k8s.io/worker-index"
)
