"""A bare DRF view for the ingest benchmark's baseline; routed only when PORTAL_BENCHMARK_VIEWS is on."""

from rest_framework.response import Response
from rest_framework.views import APIView


class BareView(APIView):
    """Does nothing but answer 200: what the ingress would cost without verifying or storing."""

    authentication_classes: list = []
    permission_classes: list = []
    parser_classes: list = []

    def post(self, request):
        return Response({"status": "ok"})
