package deploy

import (
	"context"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
)

// TestCPUReservationCRDAccepted runs the API server's own validation of a
// CRD (structural schema, CEL rules within their cost budget) on ours, so a
// schema the API server would refuse fails here, without an API server.
func TestCPUReservationCRDAccepted(t *testing.T) {
	objs := objects(t, "cpureservation-crd.yaml")
	var crd apiextensionsv1.CustomResourceDefinition
	strict(t, "CRD", objs["CustomResourceDefinition/cpureservations.corepin.io"], &crd)
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(&crd)
	var internal apiextensions.CustomResourceDefinition
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&crd, &internal, nil); err != nil {
		t.Fatal(err)
	}
	if errs := validation.ValidateCustomResourceDefinition(context.Background(), &internal); len(errs) > 0 {
		for _, e := range errs {
			t.Error(e)
		}
	}
}
