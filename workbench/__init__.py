"""paddle-workbench"""
