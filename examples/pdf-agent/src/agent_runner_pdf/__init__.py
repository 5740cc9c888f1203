"""An agent-runner plug-in: ``claim-form-extractor`` reads an insurance claim form (a PDF with
filled-in form fields) and returns its fields."""

from agent_runner_pdf.agent import ClaimFormExtractor, ClaimFormParams

__all__ = ["ClaimFormExtractor", "ClaimFormParams"]
