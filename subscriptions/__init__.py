"""Orange delivery-receipt subscription manager."""
