# Data the mocked google provider returns in terraform test (plan only).
mock_data "google_project" {
  defaults = {
    number = "123456789012"
  }
}

mock_data "google_storage_project_service_account" {
  defaults = {
    email_address = "service-123456789012@gs-project-accounts.iam.gserviceaccount.com"
  }
}

mock_data "google_compute_zones" {
  defaults = {
    names = ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]
  }
}

# By default every zone offers g2-standard-8 with one L4; tests override this
# per pool and zone.
mock_data "google_compute_machine_types" {
  defaults = {
    machine_types = [{
      name         = "g2-standard-8"
      guest_cpus   = 8
      memory_mb    = 32768
      accelerators = [{ guest_accelerator_type = "nvidia-l4", guest_accelerator_count = 1 }]
    }]
  }
}
