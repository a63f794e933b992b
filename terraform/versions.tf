terraform {
  # 1.9: validations that refer to other variables; mock_provider for `terraform test`.
  required_version = ">= 1.9.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # Validated and tested with 8.0.0 (built from source by hack/terraform/build-provider.sh).
      version = ">= 7.0.0, < 9.0.0"
    }
  }
}
